"""What the admin API's endpoints share: the calling API key and what it may see, JSON bodies
in and out, domain calls in one transaction with domain errors as 4xx, all in the platform error
envelope.

Callers authenticate with an API key. A route needs one `resource.action` permission; a key
sees its own organisation only, except keys of the operator organisation (`org_default`). A key
can grant only permissions it holds itself. Each call counts against the key's rate limits.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import anyio.to_thread
import orjson
from sqlalchemy.exc import SQLAlchemyError
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
    insufficient_permissions,
    invalid_body,
    not_found,
    unavailable,
)
from authserver.ratelimit import Limits
from authserver.scopes import ScopeCatalog
from authserver.storage.db import Database
from authserver.storage.models import DEFAULT_ORG_ID
from authserver.web.credentials import QUERY_WARNING, note_query_key, presented_api_key
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


class Caller:
    """The authenticated key behind a request, and what it may see."""

    def __init__(self, key: ApiKeyRecord, actor: audit.Actor) -> None:
        self.key = key
        self.actor = actor

    @property
    def operator(self) -> bool:
        return self.key.org_id == OPERATOR_ORG

    def need(self, resource: str, action: str) -> None:
        if not apikeys.grants(self.key.permissions, resource, action):
            raise insufficient_permissions(f"{resource}.{action}")

    def org_filter(self) -> str | None:
        """None (all organisations) for the operator, else the key's own."""
        return None if self.operator else self.key.org_id

    def may_grant(self, permissions: tuple[str, ...]) -> None:
        for permission in permissions:
            if not covers(self.key.permissions, permission):
                raise insufficient_permissions(permission)


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
    def __init__(
        self, settings: Settings, db: Database, catalog: ScopeCatalog,
        authenticator: apikeys.ApiKeyAuthenticator, clock: Clock, limits: Limits,
        client_cache: ClientCache,
    ) -> None:
        self.limits = limits
        # This instance drops changed records at once; the others follow the event log.
        self.key_cache = authenticator.keys.cache
        self.client_cache = client_cache
        self.settings = settings
        self.db = db
        self.catalog = catalog
        self.authenticator = authenticator
        self.clock = clock
        self.prefix = settings.api_keys.prefix
        self.max_body = settings.server.max_body_bytes
        self.trusted = [ipaddress.ip_network(c, strict=False)
                        for c in settings.server.trusted_proxies]

    # -- plumbing -------------------------------------------------------------------------

    async def caller(self, request: Request) -> Caller:
        key, in_query = presented_api_key(request, self.prefix,
                                          self.settings.api_keys.allow_query_parameter)
        address = client_address(request.scope, self.trusted)
        record = await self.authenticator.authenticate(key, address)
        await enforce(self.limits, await self.limits.api_key.check(
            record.id, self.limits.key_items(record.rate_limits)), record.org_id)
        if in_query:
            request.state.deprecated_query_key = True
            note_query_key(record.id, address)
        return Caller(record, audit.Actor(f"api_key:{record.id}", address, request_id(request),
                                          record.org_id))

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
        """Run a domain change in one write transaction, domain errors as 4xx."""
        def run() -> T:
            with self.db.session(write=True) as session:
                return fn(session)
        return await self._domain(run)

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
