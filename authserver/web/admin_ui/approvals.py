"""Quorum approval pages (docs/approvals.md): the requests this person can see, one request
with its payload and approvals, approve, reject (with a reason), and reveal an approved API key
(its requester, once).

The rules are the admin API's (web/approvals.py) on the same domain functions: a signed-in
person acts as `user:<id>`, so two people are two approvers, and one person is one approver
however many sessions they hold. The requester cannot approve their own request, nor can a
credential they made, nor the person who made the requesting credential. An admin of another
organisation gets 404; deleting an organisation needs an operator admin.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from authserver import approvals, users
from authserver.apikeys import ApiKeyRecord
from authserver.approvals import ApprovalView
from authserver.errors import Invalid, NotFound
from authserver.storage.models import User
from authserver.web.admin_ui.base import PREFIX, AdminUiBase, Refused
from authserver.web.approvals import may_approve

_REQUEST_ID = re.compile(r"^apr_[0-9a-f]{16}$")
ACTION_TEXT = {
    "api_key.create": "Create an API key",
    "api_key.create.privileged": "Create a privileged API key",
    "api_key.update.privileged": "Raise an API key to privileged permissions",
    "organization.delete": "Delete an organisation",
    "client.delete": "Delete a client",
}


class ApprovalPages(AdminUiBase):
    async def approval_list(self, request: Request, signed: users.SignedIn) -> Response:
        state = request.query_params.get("state", "pending")
        if state not in (*approvals.STATES, "all"):
            raise Invalid(f"state: one of {', '.join(approvals.STATES)} or all")
        now, org = self.deps.clock.now(), self.org_filter(signed)

        def read(session: Session) -> dict[str, Any]:
            found = approvals.list_requests(session, now, org,
                                            state=None if state == "all" else state)
            found = found[-500:]  # the newest 500, newest first
            found.reverse()
            return {"requests": found, "names": _people(session, found)}

        return self.render(request, "approvals.html", signed=signed, state=state,
                           states=approvals.STATES, actions=ACTION_TEXT, me=_me(signed),
                           **await self.db(read))

    async def approval_detail(self, request: Request, signed: users.SignedIn,
                              notice: str = "") -> Response:
        request_id, now = self.request_id(request), self.deps.clock.now()

        def read(session: Session) -> dict[str, Any]:
            view = approvals.get_request(session, request_id, self.org_filter(signed), now)
            return {"approval": view, "names": _people(session, [view])}

        found = await self.db(read)
        view: ApprovalView = found["approval"]
        return self.render(request, "approval.html", signed=signed, actions=ACTION_TEXT,
                           me=_me(signed), notice=notice,
                           done=request.query_params.get("done", ""),
                           needed=view.public_dict()["approvals_needed"], **found)

    async def approval_action(self, request: Request, signed: users.SignedIn) -> Response:
        request_id, action = self.request_id(request), request.path_params["action"]
        caller, now = self.caller(request, signed), self.deps.clock.now()
        org = caller.org_filter()
        if action == "approve":
            def approve(session: Session) -> ApprovalView:
                may_approve(caller, approvals.get_request(session, request_id, org, now))
                try:
                    return approvals.approve(session, self.settings.approvals, request_id,
                                             org, now, caller.actor, self.deps.catalog)
                except approvals.NotAllowed as exc:
                    raise Refused(f"{exc}. Another admin has to approve it.") from exc

            view = await self.db(approve, write=True)
            if view.state == "executed":  # this instance drops what went; others follow
                if view.action == "client.delete":
                    self.deps.client_cache.invalidate([view.target])
                elif view.action == approvals.KEY_UPDATE_ACTION:
                    self.deps.api_keys.keys.cache.invalidate([view.target])
                else:
                    self.deps.api_keys.keys.cache.clear()
                    self.deps.client_cache.clear()
            return RedirectResponse(f"{PREFIX}/approvals/{request_id}?done=approved", 303)
        if action == "reject":
            reason = self.form_of(request).values.get("reason", "")
            await self.db(lambda s: approvals.reject(s, request_id, org, now, caller.actor,
                                                     reason), write=True)
            return RedirectResponse(f"{PREFIX}/approvals/{request_id}?done=rejected", 303)
        if action == "reveal":
            def reveal(session: Session) -> tuple[ApprovalView, ApiKeyRecord, str]:
                view = approvals.get_request(session, request_id, org, now)
                caller.may_grant(tuple(view.payload.get("permissions", ())))
                try:
                    return approvals.reveal(session, self.deps.catalog, request_id, org,
                                            self.settings.api_keys.prefix, now, caller.actor)
                except approvals.NotAllowed as exc:
                    raise Refused(f"{exc}.") from exc

            view, record, key = await self.db(reveal, write=True)
            return self.render(request, "api_key_created.html", 201, signed,
                               key_record=record, key=key, approval=view)
        raise NotFound(f"no action {action}")

    @staticmethod
    def request_id(request: Request) -> str:
        """The id in the path; anything else is 404 without echoing it (it may be a key)."""
        request_id = str(request.path_params["request_id"])
        if not _REQUEST_ID.match(request_id):
            raise NotFound("no such approval request (ids look like apr_…)")
        return request_id


def _me(signed: users.SignedIn) -> str:
    return f"user:{signed.user.id}"


def _people(session: Session, views: list[ApprovalView]) -> dict[str, str]:
    """Usernames of the people (`user:<id>`) among requesters, approvers and rejecters."""
    actors = {v.requested_by for v in views}
    for view in views:
        actors |= {str(a.get("by")) for a in view.approvals}
        if view.rejection:
            actors.add(str(view.rejection.get("by")))
    ids = [a.removeprefix("user:") for a in actors if a.startswith("user:")]
    if not ids:
        return {}
    return {f"user:{uid}": name for uid, name in session.execute(
        select(User.id, User.username).where(User.id.in_(ids)))}
