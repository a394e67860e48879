"""Operator resources of the admin API: initial access tokens (`/api/v1/registration-tokens`),
signing keys (`/api/v1/signing-keys`) and the audit log (`/api/v1/audit-events`).

Registration tokens and signing-key changes belong to no organisation: only operator callers
may make them (the list of signing keys is public anyway, in the JWKS). The audit log shows
other callers their own organisation's entries.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from authserver import audit, registration
from authserver.errors import ApiError, insufficient_permissions, invalid_body
from authserver.keyring import KeyFileError, KeyView, SigningKey
from authserver.web.admin_api import (
    AdminApi,
    Caller,
    body_number,
    body_str,
    body_strs,
    decode_cursor,
    page,
    page_size,
)

ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")


def _view(view: KeyView) -> dict[str, Any]:
    return {"kid": view.kid, "alg": view.alg, "state": view.state,
            "created_at": view.created_at, "activate_at": view.activate_at,
            "stops_signing_at": view.stops_signing_at, "unpublish_at": view.unpublish_at}


def _operator(caller: Caller, what: str) -> None:
    if not caller.operator:
        raise insufficient_permissions(f"{what} (operator organisation)")


def _time(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError as exc:
        raise invalid_body(f"{name}: Unix seconds") from exc


class OperatorEndpoints(AdminApi):
    # -- /api/v1/registration-tokens ------------------------------------------------------

    async def list_registration_tokens(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("registration-tokens", "read")
        _operator(caller, "registration-tokens.read")
        now = self.now()
        limit = page_size(request)
        after = decode_cursor(request, (float, str))
        views = await self.read(lambda s: registration.list_access_tokens(
            s, after=(after[0], after[1]) if after else None, limit=limit))
        return self.respond(request, page(views, limit, lambda v: (v.created_at, v.id),
                                          lambda v: v.public_dict(now)))

    async def create_registration_token(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("registration-tokens", "create")
        _operator(caller, "registration-tokens.create")
        body = await self.body(request)
        scopes = body_strs(body, "scopes")
        if scopes is None:
            scopes = tuple(self.settings.registration.open_scopes)
        caller.may_grant(scopes)
        max_uses = body_number(body, "max_uses")
        if max_uses is not None and (max_uses != int(max_uses) or not 1 <= max_uses <= 2**31 - 1):
            raise invalid_body("max_uses: a whole number from 1 to 2147483647")
        now = self.now()
        new = await self.write(lambda s: registration.create_access_token(
            s, self.catalog, now,
            scopes=scopes,
            max_uses=None if max_uses is None else int(max_uses),
            expires_in=body_number(body, "expires_in"),
            description=body_str(body, "description") or "", actor=caller.actor))
        return self.respond(request, {"registration_token": new.view.public_dict(now),
                                      "token": new.token}, 201)

    async def revoke_registration_token(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("registration-tokens", "delete")
        _operator(caller, "registration-tokens.delete")
        token_id = request.path_params["token_id"]
        now = self.now()
        view = await self.write(lambda s: registration.revoke_access_token(
            s, token_id, now, caller.actor))
        return self.respond(request, view.public_dict(now))

    # -- /api/v1/signing-keys -------------------------------------------------------------

    async def list_signing_keys(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("signing-keys", "read")
        now = self.now()
        await self._keys(lambda: self.deps.keyring.load(now))
        views = self.deps.keyring.snapshot(now).views
        return self.respond(request, {"data": [_view(v) for v in views]})

    async def rotate_signing_key(self, request: Request) -> Response:
        """A new key (or the standby `kid`), published now, signing after the propagation
        delay; the current one retires then."""
        caller = await self.caller(request)
        caller.need("signing-keys", "update")
        _operator(caller, "signing-keys.update")
        body = await self.body(request, optional=True)
        alg = body_str(body, "alg") or self.settings.signing.algorithm
        if alg not in ALGORITHMS:
            raise invalid_body(f"alg: one of {', '.join(ALGORITHMS)}")
        kid = body_str(body, "kid")
        ring, delay = self.deps.keyring, self.settings.signing.propagation_delay
        key = await self._keys(lambda: ring.rotate(alg, self.now(), delay, kid=kid,
                                                   clock=self.now))
        await self._audit(caller, "signing_key.rotate", key, {"alg": key.alg,
                                                              "activate_at": key.activate_at})
        return self.respond(request, {"kid": key.kid, "alg": key.alg,
                                      "activate_at": key.activate_at}, 201)

    async def retire_signing_key(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("signing-keys", "update")
        _operator(caller, "signing-keys.update")
        kid = request.path_params["kid"]
        key = await self._keys(lambda: self.deps.keyring.retire(kid, self.now()))
        await self._audit(caller, "signing_key.retire", key, {})
        return self.respond(request, {"kid": key.kid, "retired_at": key.retired_at})

    async def _keys(self, job: Any) -> Any:
        """Key files are read and written off the event loop; domain errors as 4xx."""
        def run() -> Any:
            try:
                return job()
            except KeyFileError as exc:
                raise ApiError(503, "api_error", "temporarily_unavailable",
                               "The signing key files cannot be read; see the server log") \
                    from exc
        return await self._domain(run)

    async def _audit(self, caller: Caller, action: str, key: SigningKey,
                     details: dict[str, Any]) -> None:
        def write(session: Session) -> None:
            audit.record(session, caller.actor, action, key.kid, self.now(), details=details)
        await self.write(write)

    # -- /api/v1/audit-events -------------------------------------------------------------

    async def audit_events(self, request: Request) -> Response:
        """Newest first; filters `actor`, `action` (a prefix when it ends in `.`), `target`,
        `org_id`, `outcome`, `since`, `until` (Unix seconds); `limit` and `cursor` page."""
        caller = await self.caller(request)
        caller.need("audit-events", "read")
        query = request.query_params
        org_id = query.get("org_id") or caller.org_filter()
        caller.in_scope(org_id)
        limit = page_size(request)
        cursor = decode_cursor(request, (int,))
        wanted = audit.AuditQuery(
            actor=query.get("actor"), action=query.get("action"), target=query.get("target"),
            org_id=org_id, outcome=query.get("outcome"), since=_time(request, "since"),
            until=_time(request, "until"), before_id=cursor[0] if cursor else None,
            limit=limit)
        entries = await self.read(lambda s: audit.read(s, wanted))
        return self.respond(request, page(entries, limit, lambda e: (e.id,),
                                          audit.AuditView.as_dict))
