"""The API-key half of the admin API (`/api/v1/api-keys`, `/api/v1/organizations`) and the
key's self-inspection (`GET /api/v1/api-key`), in the platform error envelope.

Callers authenticate with an API key. A route needs one `resource.action` permission; a key
sees its own organisation only, except keys of the operator organisation (`org_default`). A key
can grant only permissions it holds itself.
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

from authserver import apikeys, audit, organizations
from authserver.apikeys import ApiKeyRecord
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
from authserver.scopes import ScopeCatalog
from authserver.storage.db import Database
from authserver.storage.models import DEFAULT_ORG_ID
from authserver.web.credentials import QUERY_WARNING, presented_api_key
from authserver.web.errors import NO_STORE, request_id
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


def _strs(body: Mapping[str, Any], name: str) -> tuple[str, ...] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid_body(f"{name}: must be an array of strings")
    return tuple(value)


def _str(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid_body(f"{name}: must be a string")
    return value


def _number(body: Mapping[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value \
            or value in (float("inf"), float("-inf")):
        raise invalid_body(f"{name}: must be a number")
    return float(value)


def _limits(body: Mapping[str, Any]) -> tuple[tuple[str, str], ...] | None:
    value = body.get("rate_limits")
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise invalid_body('rate_limits: must be an object like {"hourly": "1000/hour"}')
    return tuple(value.items())


def _expiry(body: Mapping[str, Any], now: float) -> float | None:
    expires_in = _number(body, "expires_in")
    if expires_in is not None:
        return now + expires_in
    return _number(body, "expires_at")


def json_response(body: object, status: int = 200, headers: Mapping[str, str] = NO_STORE
                  ) -> Response:
    return Response(orjson.dumps(body), status, dict(headers), "application/json")


class ApiKeyEndpoints:
    def __init__(
        self, settings: Settings, db: Database, catalog: ScopeCatalog,
        authenticator: apikeys.ApiKeyAuthenticator, clock: Clock,
    ) -> None:
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
        if in_query:
            request.state.deprecated_query_key = True
        return Caller(record, audit.Actor(f"api_key:{record.id}", address, request_id(request),
                                          record.org_id))

    async def body(self, request: Request) -> dict[str, Any]:
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

    # -- the key itself -------------------------------------------------------------------

    async def self_inspection(self, request: Request) -> Response:
        caller = await self.caller(request)
        key = caller.key
        return self.respond(request, {
            "id": key.id, "name": key.name, "org_id": key.org_id,
            "environment": key.environment, "permissions": list(key.permissions),
            "ip_allowlist": [str(n) for n in key.ip_allow], "expires_at": key.expires_at,
        })

    # -- /api/v1/api-keys -----------------------------------------------------------------

    async def list_keys(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("api-keys", "read")
        org = request.query_params.get("org_id") or caller.org_filter()
        if caller.org_filter() not in (None, org):
            raise not_found(f"no organisation {org}", "organization_not_found")
        revoked = request.query_params.get("include_revoked") in ("1", "true")
        now = self.now()
        keys = await self.read(lambda s: apikeys.list_keys(s, org, include_revoked=revoked))
        return self.respond(request, {"data": [k.public_dict(now) for k in keys]})

    async def create_key(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("api-keys", "create")
        body = await self.body(request)
        now = self.now()
        permissions = _strs(body, "permissions") or ()
        caller.may_grant(permissions)
        org_id = _str(body, "org_id") or caller.key.org_id
        if caller.org_filter() not in (None, org_id):
            raise not_found(f"no organisation {org_id}", "organization_not_found")
        environment = _str(body, "environment") or "live"
        if environment not in apikeys.ENVIRONMENTS:
            raise invalid_body("environment: live or test")
        spec = apikeys.ApiKeySpec(
            name=_str(body, "name") or "", org_id=org_id, permissions=permissions,
            environment=environment,
            ip_allow=_strs(body, "ip_allowlist") or (), expires_at=_expiry(body, now),
            rate_limits=_limits(body) or (),
        )
        record, key = await self.write(lambda s: apikeys.create_key(
            s, self.catalog, spec, self.prefix, now, caller.actor))
        return self.respond(request, {"api_key": record.public_dict(now), "key": key}, 201)

    async def show_key(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("api-keys", "read")
        key_id = request.path_params["key_id"]
        record = await self.read(lambda s: apikeys.get_key(s, key_id, caller.org_filter()))
        return self.respond(request, record.public_dict(self.now()))

    async def update_key(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("api-keys", "update")
        body = await self.body(request)
        now = self.now()
        permissions = _strs(body, "permissions")
        if permissions is not None:
            caller.may_grant(permissions)
        clear = "expires_at" in body and body["expires_at"] is None and "expires_in" not in body
        update = apikeys.ApiKeyUpdate(
            name=_str(body, "name"), permissions=permissions,
            ip_allow=_strs(body, "ip_allowlist"), expires_at=_expiry(body, now),
            clear_expiry=clear, rate_limits=_limits(body),
        )
        key_id = request.path_params["key_id"]
        record = await self.write(lambda s: apikeys.update_key(
            s, self.catalog, key_id, update, now, caller.actor, caller.org_filter()))
        return self.respond(request, record.public_dict(now))

    async def rotate_key(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("api-keys", "update")
        body = await self.body(request) if request.headers.get("content-length", "0") != "0" \
            else {}
        grace = _number(body, "grace_period") or 0.0
        now = self.now()
        key_id = request.path_params["key_id"]

        def rotate(session: Session) -> tuple[ApiKeyRecord, str]:
            current = apikeys.get_key(session, key_id, caller.org_filter())
            caller.may_grant(current.permissions)
            return apikeys.rotate_key(session, key_id, self.prefix, now, caller.actor,
                                      grace=grace, org_id=caller.org_filter())

        record, key = await self.write(rotate)
        return self.respond(request, {"api_key": record.public_dict(now), "key": key}, 201)

    async def revoke_key(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("api-keys", "delete")
        now = self.now()
        key_id = request.path_params["key_id"]
        record = await self.write(lambda s: apikeys.revoke_key(
            s, key_id, now, caller.actor, caller.org_filter()))
        return self.respond(request, record.public_dict(now))

    # -- /api/v1/organizations ------------------------------------------------------------

    async def list_orgs(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("organizations", "read")
        orgs = await self.read(organizations.list_orgs)
        scope = caller.org_filter()
        return self.respond(request, {"data": [o.public_dict() for o in orgs
                                               if scope in (None, o.id)]})

    async def create_org(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("organizations", "create")
        if not caller.operator:
            raise insufficient_permissions("organizations.create (operator organisation)")
        body = await self.body(request)
        name = _str(body, "name") or ""
        now = self.now()
        org = await self.write(lambda s: organizations.create_org(s, name, now, caller.actor))
        return self.respond(request, org.public_dict(), 201)

    async def show_org(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("organizations", "read")
        org_id = self._org_in_scope(caller, request)
        org = await self.read(lambda s: organizations.get_org(s, org_id))
        return self.respond(request, org.public_dict())

    async def update_org(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("organizations", "update")
        org_id = self._org_in_scope(caller, request)
        body = await self.body(request)
        name = _str(body, "name")
        disabled = body.get("disabled")
        if disabled is not None and not isinstance(disabled, bool):
            raise invalid_body("disabled: must be true or false")
        if disabled is not None and (not caller.operator or org_id == OPERATOR_ORG):
            raise insufficient_permissions("organizations.update (operator organisation; "
                                           "the operator organisation cannot be disabled)")
        now = self.now()

        def update(session: Session) -> organizations.OrgRecord:
            org = organizations.get_org(session, org_id)
            if name is not None:
                org = organizations.rename_org(session, org_id, name, now, caller.actor)
            if disabled is not None:
                org = organizations.set_org_disabled(session, org_id, disabled, now,
                                                     caller.actor)
            return org

        org = await self.write(update)
        return self.respond(request, org.public_dict())

    def _org_in_scope(self, caller: Caller, request: Request) -> str:
        org_id = str(request.path_params["org_id"])
        if caller.org_filter() not in (None, org_id):
            raise not_found(f"no organisation {org_id}", "organization_not_found")
        return org_id
