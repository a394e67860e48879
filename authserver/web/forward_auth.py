"""Forward-auth for gateways: nginx `auth_request`, Traefik `forwardAuth`, Envoy `ext_authz`
(HTTP mode). See docs/forward-auth.md.

The original request comes from forwarded headers, believed only from a trusted proxy: method
from `X-Forwarded-Method`, path from `X-Forwarded-Uri`, client address from `X-Forwarded-For`.
Exactly one header each: the proxy must set them (Traefik does; nginx is told to with
`proxy_set_header`), which overwrites whatever the client sent under the same names. Reading a
second name (e.g. nginx's customary `X-Original-URI`) would let a client's own header decide.
Envoy instead sends the original method and path itself under the `/forward-auth` prefix. The
answer is 200 with identity headers, or 401 / 403 / 429 in the platform envelope.
"""

from __future__ import annotations

import functools
import ipaddress
from time import perf_counter
from typing import NamedTuple
from urllib.parse import parse_qs, unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from authserver import apikeys
from authserver.clock import Clock
from authserver.config import Settings
from authserver.errors import (
    ApiError,
    TemporarilyUnavailable,
    insufficient_permissions,
    invalid_api_key,
    invalid_body,
    unauthenticated,
    unavailable,
)
from authserver.logs import REQUEST_ID
from authserver.metrics import FORWARD_AUTH, HTTP, HTTP_DURATION
from authserver.ratelimit import Limits, Verdict
from authserver.revocation import TokenInspector
from authserver.usage import UsageCounters
from authserver.web.credentials import API_KEY_HEADER, QUERY_WARNING, note_query_key
from authserver.web.errors import api_error_response, handle_unexpected
from authserver.web.limiting import enforce, raw_ratelimit_headers
from authserver.web.middleware import assign_request_id, forwarded_client, in_networks

FORWARD_AUTH_PATH = "/forward-auth"
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
METHOD_HEADER = "x-forwarded-method"
URI_HEADER = "x-forwarded-uri"
# The request's headers are read as ASGI gives them: lower-case bytes.
_METHOD, _URI = METHOD_HEADER.encode(), URI_HEADER.encode()
_API_KEY, _FORWARDED_FOR = API_KEY_HEADER.encode(), b"x-forwarded-for"
_NO_STORE = (b"cache-control", b"no-store")
_DEPRECATED = ((b"deprecation", b"true"), (b"warning", QUERY_WARNING.encode("latin-1")))
Headers = list[tuple[bytes, bytes]]


def checked_path(raw: str) -> str:
    """The path as the upstream will see it, once percent-decoded. Dot segments (also `..;x`),
    empty segments, encoded slashes or dots, and backslashes are refused rather than resolved: the
    upstream might resolve them differently, and a permission checked for `/customers/..`
    must never open `/invoices`."""
    if raw[:1] == "/" and "%" not in raw and "." not in raw and ";" not in raw and \
            "\\" not in raw and "//" not in raw:
        # Nothing to decode, and neither a dot segment nor an empty one can be: what the full
        # check below would find (most paths; it takes a few microseconds).
        return raw
    path = unquote(raw)
    lowered = path.lower() + " " + raw.lower()
    # A segment as servlet containers see it: `..;x` is `..`. Inner empty segments (`//`) are
    # refused too: some servers merge them, and `//host/x` is not a path to everyone.
    segments = [seg.split(";", 1)[0] for seg in path.split("/")[1:]]
    if not path.startswith("/") or "\\" in path or "%2e" in lowered or "%2f" in lowered or \
            "%5c" in lowered or any(seg in (".", "..") for seg in segments) or \
            "" in segments[:-1]:
        raise invalid_body("The original path must be absolute and normalised (no dot "
                           "segments, no encoded slashes or dots)")
    return path


class Original(NamedTuple):  # a tuple: built once per decision, a dataclass costs more
    method: str
    path: str
    query: str  # as sent; parsed only to look for a key in it
    address: str | None


IDENTITY_HEADERS = ("x-auth-org-id", "x-auth-api-key-id", "x-auth-environment",
                    "x-auth-permissions", "x-auth-client-id", "x-auth-subject", "x-auth-scopes")
_IDENTITY_NAMES = tuple(name.encode() for name in IDENTITY_HEADERS)
IDENTITY_CACHE = 10_000  # API keys whose identity headers are kept encoded


def identity_headers(identity: dict[str, str]) -> Headers:
    """Every identity header, empty where it does not apply: gateways copy only the headers
    present, and a caller's own X-Auth-* must not survive to the API."""
    return [(name, identity.get(text, "").encode("latin-1"))
            for name, text in zip(_IDENTITY_NAMES, IDENTITY_HEADERS, strict=True)]


class KeyIdentity(NamedTuple):
    """What an API key's answers share, built once per record (a changed key is a new record)."""

    record: apikeys.ApiKeyRecord
    grants: frozenset[str]
    headers: Headers


def invalid_token(message: str = "The access token is invalid, expired or revoked") -> ApiError:
    return unauthenticated("invalid_token", message,
                           challenge='Bearer realm="authserver", error="invalid_token"')


class ForwardAuth:
    def __init__(
        self, settings: Settings, authenticator: apikeys.ApiKeyAuthenticator,
        inspector: TokenInspector, limits: Limits, counters: UsageCounters, clock: Clock,
    ) -> None:
        self.settings = settings
        self.authenticator = authenticator
        self.inspector = inspector
        self.limits = limits
        self.counters = counters
        self.clock = clock
        self.prefix = settings.api_keys.prefix
        self.trusted = [ipaddress.ip_network(c, strict=False)
                        for c in settings.server.trusted_proxies]
        trusted = self.trusted
        # `in_networks` hashes the network list on each call; one address is one lookup here.
        self._trusted = functools.lru_cache(maxsize=4096)(
            lambda address: in_networks(address, trusted))
        self._keys: dict[str, KeyIdentity] = {}
        # Label children bound once: the fast path pays one inc and one observe.
        self._allowed = FORWARD_AUTH["allowed"]
        self._allowed_get = HTTP_DURATION.labels(FORWARD_AUTH_PATH, "GET", "200")

    def original(self, scope: Scope, sent: dict[bytes, bytes]) -> Original:
        """`sent`: the request's headers, the first value of each name."""
        client = scope.get("client")
        peer = client[0] if client else None
        if peer is None or not self._trusted(peer):
            raise ApiError(403, "permission_error", "untrusted_proxy",
                           "forward-auth answers trusted proxies only (server.trusted_proxies)")
        tail = scope.get("path_params", {}).get("path")
        if tail is not None:  # Envoy: the original request, path prefixed
            query = Request(scope).url.query
            method, uri = scope["method"], "/" + tail + ("?" + query if query else "")
        else:
            method = sent.get(_METHOD, b"").decode("latin-1")
            uri = sent.get(_URI, b"").decode("latin-1")
            if not method or not uri:
                raise invalid_body(f"{METHOD_HEADER} and {URI_HEADER} are required: the proxy "
                                   "must send the original method and URI")
        # Not urlsplit: it would read `//customers/x` as a host and a path.
        path, _, query = uri.partition("#")[0].partition("?")
        path = checked_path(path)
        # The caller: the peer is a trusted proxy, so the rightmost untrusted X-Forwarded-For
        # entry (`middleware.client_address`).
        forwarded = [value.decode("latin-1") for name, value in scope["headers"]
                     if name == _FORWARDED_FOR]
        return Original(method.upper(), path, query,
                        forwarded_client(peer, forwarded, self._trusted))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`GET /forward-auth` as plain ASGI, ahead of Starlette's middleware and routing (see
        `web.app.App`): a gateway asks once per request it forwards, so this is the hottest
        path of all. The same answers as `check`, the same request id and error envelope."""
        start = perf_counter()
        # The request's headers as a dict, once, still bytes: the first of a repeated name, as
        # Starlette's `Headers.get` answers, without its scan on every lookup.
        sent = {name: value for name, value in reversed(scope["headers"])}
        rid = assign_request_id(scope, sent.get(b"x-request-id", b""))
        context = REQUEST_ID.set(rid)  # for log records (logs.py)
        try:
            if scope["method"] not in METHODS:
                raise ApiError(405, "invalid_request_error", "method_not_allowed",
                               "Method not allowed on this endpoint")
            raw = await self.decide(scope, sent)
        except ApiError as exc:
            response = api_error_response(exc, rid)
            outcome = exc.code
        except Exception as exc:
            response = await handle_unexpected(Request(scope), exc)
            outcome = "server_error"
        else:
            raw += ((b"content-length", b"0"), (b"x-request-id", rid.encode()))
            await send({"type": "http.response.start", "status": 200, "headers": raw})
            await send({"type": "http.response.body", "body": b""})
            self._allowed.inc()
            if scope["method"] == "GET":
                self._allowed_get.observe(perf_counter() - start)
            else:
                HTTP.observe(FORWARD_AUTH_PATH, scope["method"], 200, perf_counter() - start)
            REQUEST_ID.reset(context)
            return
        response.headers["x-request-id"] = rid
        await response(scope, receive, send)
        FORWARD_AUTH[outcome].inc()
        HTTP.observe(FORWARD_AUTH_PATH, scope["method"], response.status_code,
                     perf_counter() - start)
        REQUEST_ID.reset(context)

    async def check(self, request: Request) -> Response:
        """The Starlette endpoint: Envoy's `/forward-auth/{path}` form."""
        sent = {name: value for name, value in reversed(request.scope["headers"])}
        try:
            raw = await self.decide(request.scope, sent)
        except ApiError as exc:
            FORWARD_AUTH[exc.code].inc()
            raise
        except Exception:
            FORWARD_AUTH["server_error"].inc()
            raise
        self._allowed.inc()
        response = Response(b"", 200)
        response.raw_headers[:0] = raw  # ahead of its content-length, as a dict of headers
        return response

    async def decide(self, scope: Scope, sent: dict[bytes, bytes]) -> Headers:
        """The answer's headers when the original request may pass (a new list), else an
        ApiError. `sent`: the request's headers, the first value of each name."""
        original = self.original(scope, sent)
        needed = apikeys.required(original.method, original.path)
        raw: Headers = [_NO_STORE]
        value = sent.get(_API_KEY)
        key = None if value is None else value.decode("latin-1")
        from_query = False
        if key is None and original.query and self.settings.api_keys.allow_query_parameter:
            values = parse_qs(original.query).get(API_KEY_HEADER)
            if values:
                key, from_query = values[0], True
        if key is not None:
            record = await self.authenticator.authenticate(key.strip(), original.address)
            verdict = await self._limit(await self.limits.api_key.check(
                record.id, self.limits.key_items(record.rate_limits)), record.org_id)
            grants, identity = self._key_identity(record)
            subject, org_id = record.id, record.org_id
            if from_query:
                raw += _DEPRECATED
                note_query_key(record.id, original.address)
        else:
            kind, _, bearer = sent.get(b"authorization", b"").decode("latin-1").partition(" ")
            bearer = bearer.strip() if kind.lower() == "bearer" else ""
            if bearer and apikeys.looks_like_key(bearer, self.prefix):
                raise invalid_api_key("API keys are sent in the x-api-key header, not as "
                                      "Authorization: Bearer", "api_key_in_authorization_header")
            if not bearer:
                raise invalid_api_key("An API key (x-api-key) or a bearer token is required",
                                      "missing")
            grants, claimed, verdict = await self._token(bearer)
            identity = identity_headers(claimed)
            subject, org_id = claimed["x-auth-client-id"], claimed.get("x-auth-org-id", "")
        if needed is None or not apikeys.grants(grants, *needed):
            wanted = f"{needed[0]}.{needed[1]}" if needed else f"{original.method} (no action)"
            raise insufficient_permissions(wanted)
        raw += identity
        raw += raw_ratelimit_headers(verdict)
        self.counters.count(subject, org_id, needed[1], self.clock.now(),
                            api_key=key is not None)
        return raw

    def _key_identity(self, record: apikeys.ApiKeyRecord) -> tuple[frozenset[str], Headers]:
        known = self._keys.get(record.id)
        if known is None or known.record is not record:
            if len(self._keys) >= IDENTITY_CACHE:
                self._keys.clear()
            headers = identity_headers({
                "x-auth-org-id": record.org_id, "x-auth-api-key-id": record.id,
                "x-auth-environment": record.environment,
                "x-auth-permissions": " ".join(record.permissions)})
            known = KeyIdentity(record, frozenset(record.permissions), headers)
            self._keys[record.id] = known
        return known.grants, known.headers

    async def _token(self, token: str) -> tuple[frozenset[str], dict[str, str], Verdict]:
        try:
            claims = await self.inspector.active(token)
            # the client's own limits; a cache hit, since `active` has just read it
            client = None if claims is None else \
                await self.inspector.clients.get(str(claims["client_id"]))
        except TemporarilyUnavailable as exc:
            raise unavailable(exc.description) from exc
        if claims is None:
            raise invalid_token()
        audiences = self.settings.forward_auth.audiences
        aud = claims.get("aud")
        if audiences and not set(aud if isinstance(aud, list) else [aud]) & set(audiences):
            raise invalid_token("The access token was issued for another API")
        scopes = frozenset(str(claims.get("scope", "")).split())
        client_id = str(claims["client_id"])
        org_id = str(claims.get("org_id", ""))
        overrides = client.rate_limits if client is not None else {}
        verdict = await self._limit(await self.limits.client.check(
            client_id, self.limits.client_items(overrides)), org_id)
        identity = {"x-auth-client-id": client_id, "x-auth-subject": str(claims["sub"]),
                    "x-auth-scopes": " ".join(sorted(scopes))}
        if org_id:
            identity["x-auth-org-id"] = org_id
        return scopes, identity, verdict

    async def _limit(self, own: Verdict, org_id: str) -> Verdict:
        return await enforce(self.limits, own, org_id)
