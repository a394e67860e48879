"""Quorum approval in the admin API (`/api/v1/approvals`): list and show requests, approve,
reject, and reveal an approved API key (its requester, once). docs/approvals.md.

Reading needs `approvals.read`, deciding `approvals.update`. To approve, a caller also needs
what the action itself needs (so approvers are peers of the requester): `api-keys.create` and
every permission of the key; `api-keys.update` and every permission of the key before and
after a change; `organizations.delete` in the operator organisation; `clients.delete` and
every scope of the client. A caller sees requests of its own organisation only (the
operator's callers: every one).
"""

from __future__ import annotations

import re

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from authserver import approvals
from authserver.apikeys import ApiKeyRecord
from authserver.approvals import ApprovalView
from authserver.errors import ApiError, insufficient_permissions, invalid_body, not_found
from authserver.web.admin_api import (
    AdminApi,
    Caller,
    body_str,
    decode_cursor,
    page,
    page_size,
)

_REQUEST_ID = re.compile(r"^apr_[0-9a-f]{16}$")


def refused(exc: approvals.NotAllowed) -> ApiError:
    return ApiError(403, "permission_error", "insufficient_permissions", str(exc),
                    {"required": "approvals.update (an admin other than the requester)"})


def may_approve(caller: Caller, view: ApprovalView) -> None:
    """The approver could have taken the action itself."""
    if view.action in approvals.KEY_ACTIONS:
        caller.need("api-keys", "create")
        caller.may_grant(tuple(view.payload.get("permissions", ())))
    elif view.action == approvals.KEY_UPDATE_ACTION:
        caller.need("api-keys", "update")
        caller.may_grant(tuple(view.payload.get("permissions", ())))
        caller.may_grant(tuple(view.payload.get("previous_permissions", ())))
    elif view.action == "organization.delete":
        caller.need("organizations", "delete")
        if not caller.operator:
            raise insufficient_permissions("organizations.delete (operator organisation)")
    else:
        caller.need("clients", "delete")
        caller.may_grant(tuple(view.payload.get("scopes", ())))


class ApprovalEndpoints(AdminApi):
    def _id(self, request: Request) -> str:
        """The id in the path; anything else is 404 without echoing it (it may be a key)."""
        request_id = str(request.path_params["request_id"])
        if not _REQUEST_ID.match(request_id):
            raise not_found("no such approval request (ids look like apr_…)")
        return request_id

    async def list_requests(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("approvals", "read")
        query = request.query_params
        org_id = query.get("org_id") or caller.org_filter()
        caller.in_scope(org_id)
        state = query.get("state")
        if state is not None and state not in approvals.STATES:
            raise invalid_body(f"state: one of {', '.join(approvals.STATES)}")
        limit = page_size(request)
        after = decode_cursor(request, (float, str))
        now = self.now()
        found = await self.read(lambda s: approvals.list_requests(
            s, now, org_id, state=state, after=(after[0], after[1]) if after else None,
            limit=limit))
        return self.respond(request, page(found, limit, lambda v: (v.created_at, v.id),
                                          ApprovalView.public_dict))

    async def show_request(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("approvals", "read")
        request_id = self._id(request)
        now = self.now()
        view = await self.read(lambda s: approvals.get_request(s, request_id,
                                                                caller.org_filter(), now))
        return self.respond(request, view.public_dict())

    async def approve(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("approvals", "update")
        request_id = self._id(request)
        now = self.now()

        def run(session: Session) -> ApprovalView:
            may_approve(caller, approvals.get_request(session, request_id, caller.org_filter(),
                                                      now))
            try:
                return approvals.approve(session, self.settings.approvals, request_id,
                                         caller.org_filter(), now, caller.actor, self.catalog)
            except approvals.NotAllowed as exc:
                raise refused(exc) from exc

        view = await self.write(run)
        if view.state == "executed":  # this instance drops what went; the others follow events
            if view.action == "client.delete":
                self.client_cache.invalidate([view.target])
            elif view.action == approvals.KEY_UPDATE_ACTION:
                self.key_cache.invalidate([view.target])
            else:
                self.key_cache.clear()
                self.client_cache.clear()
        return self.respond(request, view.public_dict())

    async def reject(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("approvals", "update")
        body = await self.body(request, optional=True)
        reason = body_str(body, "reason") or ""
        request_id = self._id(request)
        now = self.now()
        view = await self.write(lambda s: approvals.reject(
            s, request_id, caller.org_filter(), now, caller.actor, reason))
        return self.respond(request, view.public_dict())

    async def reveal(self, request: Request) -> Response:
        """The approved key, made now and shown this once, to its requester."""
        caller = await self.caller(request)
        caller.need("api-keys", "create")
        request_id = self._id(request)
        now = self.now()

        def run(session: Session) -> tuple[ApprovalView, ApiKeyRecord, str]:
            view = approvals.get_request(session, request_id, caller.org_filter(), now)
            caller.may_grant(tuple(view.payload.get("permissions", ())))
            try:
                return approvals.reveal(session, self.catalog, request_id, caller.org_filter(),
                                        self.prefix, now, caller.actor)
            except approvals.NotAllowed as exc:
                raise ApiError(403, "permission_error", "insufficient_permissions", str(exc),
                               {"required": "api-keys.create (the requester)"}) from exc

        view, record, key = await self.write(run)
        return self.respond(request, {"approval": view.public_dict(),
                                      "api_key": record.public_dict(now), "key": key}, 201)
