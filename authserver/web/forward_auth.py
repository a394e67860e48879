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
from authserver.web.limiting import enforce, ratelimit_headers
from authserver.web.middleware import assign_request_id, client_address, in_networks

FORWARD_AUTH_PATH = "/forward-auth"
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
METHOD_HEADER = "x-forwarded-method"
URI_HEADER = "x-forwarded-uri"


def checked_path(raw: str) -> str:
    """The path as the upstream will see it, once percent-decoded. Dot segments (also `..;x`),
    empty segments, encoded slashes or dots, and backslashes are refused rather than resolved: the
    upstream might resolve them differently, and a permission checked for `/customers/..`
    must never open `/invoices`."""
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
    query: dict[str, list[str]]
    address: str | None


IDENTITY_HEADERS = ("x-auth-org-id", "x-auth-api-key-id", "x-auth-environment",
                    "x-auth-permissions", "x-auth-client-id", "x-auth-subject", "x-auth-scopes")


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
        # Label children bound once: the fast path pays one inc and one observe.
        self._allowed = FORWARD_AUTH["allowed"]
        self._allowed_get = HTTP_DURATION.labels(FORWARD_AUTH_PATH, "GET", "200")

    def original(self, request: Request, headers: dict[str, str]) -> Original:
        peer = request.client.host if request.client else None
        if peer is None or not in_networks(peer, self.trusted):
            raise ApiError(403, "permission_error", "untrusted_proxy",
                           "forward-auth answers trusted proxies only (server.trusted_proxies)")
        tail = request.path_params.get("path")
        if tail is not None:  # Envoy: the original request, path prefixed
            method, uri = request.method, "/" + tail + (
                "?" + request.url.query if request.url.query else "")
        else:
            method, uri = headers.get(METHOD_HEADER, ""), headers.get(URI_HEADER, "")
            if not method or not uri:
                raise invalid_body(f"{METHOD_HEADER} and {URI_HEADER} are required: the proxy "
                                   "must send the original method and URI")
        # Not urlsplit: it would read `//customers/x` as a host and a path.
        path, _, query = uri.partition("#")[0].partition("?")
        return Original(method.upper(), checked_path(path), parse_qs(query),
                        client_address(request.scope, self.trusted))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`GET /forward-auth` as plain ASGI, ahead of Starlette's middleware and routing (see
        `web.app.App`): a gateway asks once per request it forwards, so this is the hottest
        path of all. The same answers as `check`, the same request id and error envelope."""
        start = perf_counter()
        rid = assign_request_id(scope)
        context = REQUEST_ID.set(rid)  # for log records (logs.py)
        request = Request(scope)
        try:
            if scope["method"] not in METHODS:
                raise ApiError(405, "invalid_request_error", "method_not_allowed",
                               "Method not allowed on this endpoint")
            headers = await self.decide(request)
        except ApiError as exc:
            response = api_error_response(exc, rid)
            outcome = exc.code
        except Exception as exc:
            response = await handle_unexpected(request, exc)
            outcome = "server_error"
        else:
            raw = [(name.encode(), value.encode("latin-1")) for name, value in headers.items()]
            raw += [(b"content-length", b"0"), (b"x-request-id", rid.encode())]
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
        try:
            headers = await self.decide(request)
        except ApiError as exc:
            FORWARD_AUTH[exc.code].inc()
            raise
        except Exception:
            FORWARD_AUTH["server_error"].inc()
            raise
        self._allowed.inc()
        return Response(b"", 200, headers)

    async def decide(self, request: Request) -> dict[str, str]:
        """The answer's headers when the original request may pass, else an ApiError."""
        # The request's headers as a dict, once: the first of a repeated name, as Starlette's
        # `Headers.get` answers, without its scan and lower-casing on every lookup.
        sent = {name.decode("latin-1"): value.decode("latin-1")
                for name, value in reversed(request.scope["headers"])}
        original = self.original(request, sent)
        needed = apikeys.required(original.method, original.path)
        headers: dict[str, str] = {"cache-control": "no-store"}
        key = sent.get(API_KEY_HEADER)
        from_query = False
        if key is None and self.settings.api_keys.allow_query_parameter:
            values = original.query.get(API_KEY_HEADER)
            if values:
                key, from_query = values[0], True
        kind, _, bearer = sent.get("authorization", "").partition(" ")
        bearer = bearer.strip() if kind.lower() == "bearer" else ""
        if key is not None:
            grants, identity, verdict = await self._api_key(key.strip(), original.address)
            if from_query:
                headers["deprecation"] = "true"
                headers["warning"] = QUERY_WARNING
                note_query_key(identity["x-auth-api-key-id"], original.address)
        elif bearer and apikeys.looks_like_key(bearer, self.prefix):
            raise invalid_api_key("API keys are sent in the x-api-key header, not as "
                                  "Authorization: Bearer", "api_key_in_authorization_header")
        elif bearer:
            grants, identity, verdict = await self._token(bearer)
        else:
            raise invalid_api_key("An API key (x-api-key) or a bearer token is required",
                                  "missing")
        if needed is None or not apikeys.grants(grants, *needed):
            wanted = f"{needed[0]}.{needed[1]}" if needed else f"{original.method} (no action)"
            raise insufficient_permissions(wanted)
        # Every identity header, empty where it does not apply: gateways copy only the headers
        # present, and a caller's own X-Auth-* must not survive to the API.
        headers.update({name: identity.get(name, "") for name in IDENTITY_HEADERS})
        headers.update(ratelimit_headers(verdict))
        subject = identity.get("x-auth-api-key-id") or identity["x-auth-client-id"]
        self.counters.count(subject, identity.get("x-auth-org-id", ""), needed[1],
                            self.clock.now(), api_key="x-auth-api-key-id" in identity)
        return headers

    async def _api_key(self, key: str, address: str | None
                       ) -> tuple[frozenset[str], dict[str, str], Verdict]:
        record = await self.authenticator.authenticate(key, address)
        verdict = await self._limit(await self.limits.api_key.check(
            record.id, self.limits.key_items(record.rate_limits)), record.org_id)
        return frozenset(record.permissions), {
            "x-auth-org-id": record.org_id, "x-auth-api-key-id": record.id,
            "x-auth-environment": record.environment,
            "x-auth-permissions": " ".join(record.permissions),
        }, verdict

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
