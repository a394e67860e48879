"""What the admin API's endpoints share: the calling API key and what it may see, JSON bodies
in and out, domain calls in one transaction with domain errors as 4xx, all in the platform error
envelope.

Callers authenticate with an API key. A route needs one `resource.action` permission; a key
sees its own organisation only, except keys of the operator organisation (`org_default`). A key
can grant only permissions it holds itself. Each call counts against the key's rate limits.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio.to_thread
import orjson
from sqlalchemy.exc import DataError, SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from authserver import apikeys, audit
from authserver.apikeys import ApiKeyRecord
from authserver.clients import ClientCache
from authserver.clock import Clock
from authserver.config import Settings
from authserver.errors import (
    ApiError,
    Conflict,
    Invalid,
    InvalidRequest,
    NotFound,
    OAuthError,
    TemporarilyUnavailable,
    insufficient_permissions,
    invalid_body,
    not_found,
    unauthenticated,
    unavailable,
)
from authserver.keyring import Keyring
from authserver.ratelimit import Limits
from authserver.revocation import TokenInspector
from authserver.scopes import ScopeCatalog
from authserver.storage.db import Database
from authserver.storage.models import DEFAULT_ORG_ID
from authserver.web.credentials import (
    API_KEY_HEADER,
    QUERY_WARNING,
    note_query_key,
    presented_api_key,
)
from authserver.web.errors import NO_STORE, request_id
from authserver.web.limiting import enforce
from authserver.web.middleware import client_address
from authserver.web.registration import json_object

API_PREFIX = "/api/v1"
OPERATOR_ORG = DEFAULT_ORG_ID
T = TypeVar("T")

def covers(held: tuple[str, ...], wanted: str) -> bool:
    """Whether a key holding `held` may hand out `wanted`."""
    if "*" in held or wanted in held:
        return True
    resource, dot, action = wanted.partition(".")
    if not dot or wanted == "*":
        return False
    if resource == "*":
        return f"*.{action}" in held
    if action == "*":
        return f"{resource}.*" in held
    return apikeys.grants(held, resource, action)


@dataclass(frozen=True)
class Caller:
    """Who is calling (an API key, or a client's access token), and what it may see: its
    permissions (a token's scopes) and its organisation."""

    permissions: tuple[str, ...]
    org_id: str
    actor: audit.Actor
    key: ApiKeyRecord | None = None

    @property
    def operator(self) -> bool:
        return self.org_id == OPERATOR_ORG

    def need(self, resource: str, action: str) -> None:
        if not apikeys.grants(self.permissions, resource, action):
            raise insufficient_permissions(f"{resource}.{action}")

    def org_filter(self) -> str | None:
        """None (all organisations) for the operator, else the caller's own."""
        return None if self.operator else self.org_id

    def in_scope(self, org_id: str | None) -> None:
        """404 for an organisation the caller may not see (its existence is not revealed)."""
        if self.org_filter() not in (None, org_id):
            raise not_found(f"no organisation {org_id}", "organization_not_found")

    def may_grant(self, permissions: tuple[str, ...]) -> None:
        for permission in permissions:
            if not covers(self.permissions, permission):
                raise insufficient_permissions(permission)


@dataclass(frozen=True)
class AdminDeps:
    """What the admin API's endpoints work with."""

    settings: Settings
    db: Database
    catalog: ScopeCatalog
    api_keys: apikeys.ApiKeyAuthenticator
    inspector: TokenInspector
    clock: Clock
    limits: Limits
    client_cache: ClientCache
    keyring: Keyring


def _bearer(request: Request) -> str:
    kind, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if kind.lower() == "bearer" else ""


MAX_PAGE = 500


def page_size(request: Request, default: int = 100) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PAGE:
        raise invalid_body(f"limit: 1 to {MAX_PAGE}")
    return int(raw)


def encode_cursor(*parts: object) -> str:
    """An opaque position in a listing (the last item's sort key)."""
    return base64.urlsafe_b64encode(orjson.dumps(list(parts))).decode().rstrip("=")


def decode_cursor(request: Request, shape: tuple[type, ...]) -> tuple[Any, ...] | None:
    raw = request.query_params.get("cursor")
    if raw is None:
        return None
    try:
        parts = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise invalid_body("cursor: not a cursor this API gave out") from exc
    if not isinstance(parts, list) or len(parts) != len(shape) or not all(
            isinstance(p, t) and not isinstance(p, bool) for p, t in zip(parts, shape,
                                                                          strict=True)):
        raise invalid_body("cursor: not a cursor this API gave out")
    return tuple(parts)


def page(items: list[Any], limit: int, key: Callable[[Any], tuple[object, ...]],
         render: Callable[[Any], object]) -> dict[str, object]:
    """`{"data": [...], "next_cursor": ...}`: the cursor is set when a full page came back."""
    return {"data": [render(i) for i in items],
            "next_cursor": encode_cursor(*key(items[-1])) if len(items) == limit else None}


def body_strs(body: Mapping[str, Any], name: str) -> tuple[str, ...] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid_body(f"{name}: must be an array of strings")
    return tuple(value)


def body_str(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid_body(f"{name}: must be a string")
    return value


def body_number(body: Mapping[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value \
            or value in (float("inf"), float("-inf")):
        raise invalid_body(f"{name}: must be a number")
    return float(value)


def body_limits(body: Mapping[str, Any]) -> tuple[tuple[str, str], ...] | None:
    value = body.get("rate_limits")
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise invalid_body('rate_limits: must be an object like {"hourly": "1000/hour"}')
    return tuple(value.items())


def body_expiry(body: Mapping[str, Any], now: float) -> float | None:
    expires_in = body_number(body, "expires_in")
    if expires_in is not None:
        return now + expires_in
    return body_number(body, "expires_at")


def json_response(body: object, status: int = 200, headers: Mapping[str, str] = NO_STORE
                  ) -> Response:
    return Response(orjson.dumps(body), status, dict(headers), "application/json")

class AdminApi:
    def __init__(self, deps: AdminDeps) -> None:
        settings = deps.settings
        self.deps = deps
        self.limits = deps.limits
        # This instance drops changed records at once; the others follow the event log.
        self.key_cache = deps.api_keys.keys.cache
        self.client_cache = deps.client_cache
        self.settings = settings
        self.db = deps.db
        self.catalog = deps.catalog
        self.authenticator = deps.api_keys
        self.clock = deps.clock
        self.prefix = settings.api_keys.prefix
        self.max_body = settings.server.max_body_bytes
        self.trusted = [ipaddress.ip_network(c, strict=False)
                        for c in settings.server.trusted_proxies]

    # -- plumbing -------------------------------------------------------------------------

    async def caller(self, request: Request) -> Caller:
        """An API key (`x-api-key`), or an access token of this server (`Authorization:
        Bearer`) whose scopes serve as permissions; each call counts against its limits."""
        address = client_address(request.scope, self.trusted)
        bearer = _bearer(request)
        if bearer and request.headers.get(API_KEY_HEADER) is None \
                and not apikeys.looks_like_key(bearer, self.prefix):
            return await self._token_caller(request, bearer, address)
        key, in_query = presented_api_key(request, self.prefix,
                                          self.settings.api_keys.allow_query_parameter)
        record = await self.authenticator.authenticate(key, address)
        await enforce(self.limits, await self.limits.api_key.check(
            record.id, self.limits.key_items(record.rate_limits)), record.org_id)
        if in_query:
            request.state.deprecated_query_key = True
            note_query_key(record.id, address)
        return Caller(record.permissions, record.org_id,
                      audit.Actor(f"api_key:{record.id}", address, request_id(request),
                                  record.org_id), record)

    async def _token_caller(self, request: Request, token: str, address: str | None
                            ) -> Caller:
        try:
            claims = await self.deps.inspector.active(token)
        except TemporarilyUnavailable as exc:
            raise unavailable(exc.description) from exc
        if claims is None:
            raise unauthenticated("invalid_token",
                                  "The access token is invalid, expired or revoked",
                                  challenge='Bearer realm="authserver", error="invalid_token"')
        audience = self.settings.issuer.rstrip("/") + API_PREFIX
        aud = claims.get("aud")
        if audience not in (aud if isinstance(aud, list) else [aud]):
            # A token for some other API must not open this one (its holder could replay it).
            raise unauthenticated("invalid_token",
                                  f"The access token was not issued for this API; request it "
                                  f"with resource={audience}",
                                  challenge='Bearer realm="authserver", error="invalid_token"')
        client_id, org_id = str(claims["client_id"]), str(claims.get("org_id", ""))
        await enforce(self.limits, await self.limits.client.check(client_id), org_id)
        return Caller(tuple(str(claims.get("scope", "")).split()), org_id,
                      audit.Actor(f"client:{client_id}", address, request_id(request), org_id))

    async def body(self, request: Request, optional: bool = False) -> dict[str, Any]:
        """The JSON object sent; with `optional`, a request without a body (no Content-Type,
        no Transfer-Encoding, no or zero Content-Length) counts as `{}`."""
        headers = request.headers
        if optional and headers.get("content-length", "0") == "0" and \
                "transfer-encoding" not in headers and "content-type" not in headers:
            return {}
        try:
            return await json_object(request, self.max_body, InvalidRequest)
        except OAuthError as exc:
            raise ApiError(exc.status_code, "invalid_request_error", "invalid_request",
                           exc.description) from exc

    async def write(self, fn: Callable[[Session], T]) -> T:
        """Run a domain change in one write transaction, domain errors as 4xx. Rerun on a
        serialization failure or deadlock (`Database.run`): every `fn` given here keeps its
        whole effect in the session (secrets it makes are made again), so a rerun is safe."""
        return await self._domain(lambda: self.db.run(fn, write=True))

    async def read(self, fn: Callable[[Session], T]) -> T:
        def run() -> T:
            with self.db.session() as session:
                return fn(session)
        return await self._domain(run)

    async def _domain(self, run: Callable[[], T]) -> T:
        try:
            return await anyio.to_thread.run_sync(run)
        except NotFound as exc:
            raise not_found(str(exc), "organization_not_found" if "organisation" in str(exc)
                            else "not_found") from exc
        except Invalid as exc:
            raise invalid_body(str(exc)) from exc
        except Conflict as exc:
            raise ApiError(409, "invalid_request_error", "conflict", str(exc)) from exc
        except DataError as exc:  # e.g. a NUL character, which PostgreSQL cannot store
            raise invalid_body("A value cannot be stored as given (a NUL character, or a "
                               "number out of range)") from exc
        except SQLAlchemyError as exc:
            raise unavailable("The store is unavailable; nothing was changed; retry "
                              "shortly") from exc

    def respond(self, request: Request, body: object, status: int = 200) -> Response:
        headers = dict(NO_STORE)
        if getattr(request.state, "deprecated_query_key", False):
            headers["deprecation"] = "true"
            headers["warning"] = QUERY_WARNING
        return json_response(body, status, headers)

    def now(self) -> float:
        return self.clock.now()
