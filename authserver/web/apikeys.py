"""The API-key half of the admin API (`/api/v1/api-keys`) and the key's self-inspection
(`GET /api/v1/api-key`)."""

from __future__ import annotations

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from authserver import apikeys, approvals
from authserver.apikeys import ApiKeyRecord
from authserver.approvals import ApprovalView
from authserver.errors import invalid_api_key, invalid_body
from authserver.web.admin_api import (
    AdminApi,
    Caller,
    body_expiry,
    body_limits,
    body_number,
    body_str,
    body_strs,
    decode_cursor,
    page,
    page_size,
)


class ApiKeyEndpoints(AdminApi):
    # -- the key itself -------------------------------------------------------------------

    async def self_inspection(self, request: Request) -> Response:
        caller = await self.caller(request)
        key = caller.key
        if key is None:
            raise invalid_api_key("This endpoint describes the API key that calls it; send "
                                  "one in x-api-key", "missing")
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
        caller.in_scope(org)
        revoked = request.query_params.get("include_revoked") in ("1", "true")
        limit = page_size(request)
        after = decode_cursor(request, (float, str))
        now = self.now()
        keys = await self.read(lambda s: apikeys.list_keys(
            s, org, include_revoked=revoked, after=(after[0], after[1]) if after else None,
            limit=limit))
        return self.respond(request, page(keys, limit, lambda k: (k.created_at, k.id),
                                          lambda k: k.public_dict(now)))

    async def create_key(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("api-keys", "create")
        body = await self.body(request)
        now = self.now()
        permissions = body_strs(body, "permissions") or ()
        caller.may_grant(permissions)
        org_id = body_str(body, "org_id") or caller.org_id
        caller.in_scope(org_id)
        environment = body_str(body, "environment") or "live"
        if environment not in apikeys.ENVIRONMENTS:
            raise invalid_body("environment: live or test")
        spec = apikeys.ApiKeySpec(
            name=body_str(body, "name") or "", org_id=org_id, permissions=permissions,
            environment=environment,
            ip_allow=body_strs(body, "ip_allowlist") or (), expires_at=body_expiry(body, now),
            rate_limits=body_limits(body) or (),
        )
        gated = approvals.key_action(self.settings.approvals, self.catalog, permissions)
        if gated is not None:  # 202: made at its reveal, after approval (docs/approvals.md)
            expires_in = body_number(body, "expires_in")
            view = await self.write(lambda s: approvals.request_key(
                s, self.settings.approvals, self.catalog, gated, spec, now, caller.actor,
                expires_in=expires_in))
            return self.respond(request, view.public_dict(), 202)
        record, key = await self.write(lambda s: apikeys.create_key(
            s, self.catalog, spec, self.prefix, now, caller.actor))
        return self.respond(request, {"api_key": record.public_dict(now), "key": key}, 201)

    async def show_key(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("api-keys", "read")
        key_id = self._key_id(request)
        record = await self.read(lambda s: apikeys.get_key(s, key_id, caller.org_filter()))
        return self.respond(request, record.public_dict(self.now()))

    async def update_key(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("api-keys", "update")
        body = await self.body(request)
        now = self.now()
        permissions = body_strs(body, "permissions")
        if permissions is not None:
            caller.may_grant(permissions)
        clear = "expires_at" in body and body["expires_at"] is None and "expires_in" not in body
        update = apikeys.ApiKeyUpdate(
            name=body_str(body, "name"), permissions=permissions,
            ip_allow=body_strs(body, "ip_allowlist"), expires_at=body_expiry(body, now),
            clear_expiry=clear, rate_limits=body_limits(body),
        )
        key_id = self._key_id(request)

        def change(session: Session) -> ApiKeyRecord | ApprovalView:
            current = self._may_change(session, caller, key_id)
            if approvals.key_update_action(self.settings.approvals, self.catalog,
                                           current.permissions, update.permissions):
                # 202: raising a key to privileged permissions waits for the quorum, like
                # creating such a key (docs/approvals.md); the whole change runs on approval.
                return approvals.request_key_update(
                    session, self.settings.approvals, self.catalog, key_id, update, now,
                    caller.actor, caller.org_filter())
            return apikeys.update_key(session, self.catalog, key_id, update, now, caller.actor,
                                      caller.org_filter())

        result = await self.write(change)
        if isinstance(result, ApprovalView):
            return self.respond(request, result.public_dict(), 202)
        self.key_cache.invalidate([key_id])
        return self.respond(request, result.public_dict(now))

    async def rotate_key(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("api-keys", "update")
        body = await self.body(request, optional=True)
        grace = body_number(body, "grace_period") or 0.0
        now = self.now()
        key_id = self._key_id(request)

        def rotate(session: Session) -> tuple[ApiKeyRecord, str]:
            self._may_change(session, caller, key_id)
            return apikeys.rotate_key(session, key_id, self.prefix, now, caller.actor,
                                      grace=grace, org_id=caller.org_filter())

        record, key = await self.write(rotate)
        self.key_cache.invalidate([key_id])
        return self.respond(request, {"api_key": record.public_dict(now), "key": key}, 201)

    async def revoke_key(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("api-keys", "delete")
        now = self.now()
        key_id = self._key_id(request)
        def revoke(session: Session) -> ApiKeyRecord:
            self._may_change(session, caller, key_id)
            return apikeys.revoke_key(session, key_id, now, caller.actor, caller.org_filter())

        record = await self.write(revoke)
        self.key_cache.invalidate([key_id])
        return self.respond(request, record.public_dict(now))

    def _key_id(self, request: Request) -> str:
        """The id in the path; a whole key pasted there is refused without echoing it."""
        key_id = str(request.path_params["key_id"])
        if apikeys.looks_like_key(key_id, self.prefix):
            raise invalid_body("That is an API key, not its id (key_...); the key was not "
                               "used, but treat it as exposed and rotate it")
        return key_id

    @staticmethod
    def _may_change(session: Session, caller: Caller, key_id: str) -> ApiKeyRecord:
        """A caller changes only keys it could have made: holding every permission of the key
        (else rotating or loosening it would hand the caller those permissions)."""
        current = apikeys.get_key(session, key_id, caller.org_filter(), lock=True)
        caller.may_grant(current.permissions)
        return current

