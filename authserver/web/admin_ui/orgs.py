"""Organisation pages: list, create, rename, disable and enable, delete (an empty one; a
pending request instead when `organization.delete` is gated).

The admin API's rules (web/organizations.py): admins of the operator organisation see, create,
disable and enable every organisation (except disabling their own); an admin of another
organisation sees only theirs and may rename it. Disabling cuts off the tokens of its clients
and stops its API keys."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from authserver import approvals, organizations, users
from authserver.errors import NotFound
from authserver.storage.models import DEFAULT_ORG_ID, ApiKey, Client
from authserver.web.admin_ui.base import PREFIX, AdminUiBase, Refused


class OrganizationPages(AdminUiBase):
    async def org_list(self, request: Request, signed: users.SignedIn) -> Response:
        scope = self.org_filter(signed)

        def read(session: Session) -> dict[str, Any]:
            orgs = organizations.list_orgs(session, scope)
            client_counts = {org: n for org, n in session.execute(
                select(Client.org_id, func.count()).group_by(Client.org_id))}
            key_counts = {org: n for org, n in session.execute(
                select(ApiKey.org_id, func.count()).where(ApiKey.status == "active")
                .group_by(ApiKey.org_id))}
            return {"orgs": orgs, "client_counts": client_counts, "key_counts": key_counts}

        found = await self.db(read)
        return self.render(request, "organizations.html", signed=signed,
                           operator=scope is None,
                           changed=request.query_params.get("changed", ""),
                           deleted=request.query_params.get("deleted", ""),
                           approvals_gate=self.settings.approvals.gates("organization.delete"),
                           **found)

    async def org_create(self, request: Request, signed: users.SignedIn) -> Response:
        if self.org_filter(signed) is not None:
            raise Refused("Only admins of the operator organisation create organisations.")
        name, now = self.form_of(request).values.get("name", ""), self.deps.clock.now()
        actor = self.actor(request, signed)
        org = await self.db(lambda s: organizations.create_org(s, name, now, actor), True)
        return RedirectResponse(f"{PREFIX}/organizations?changed={org.id}", 303)

    async def org_action(self, request: Request, signed: users.SignedIn) -> Response:
        org_id, action = request.path_params["org_id"], request.path_params["action"]
        if self.org_filter(signed) not in (None, org_id):
            raise NotFound(f"no organisation {org_id}")  # its existence is not revealed
        now, actor = self.deps.clock.now(), self.actor(request, signed)
        if action == "rename":
            name = self.form_of(request).values.get("name", "")
            await self.db(lambda s: organizations.rename_org(s, org_id, name, now, actor),
                          True)
        elif action in ("disable", "enable"):
            if self.org_filter(signed) is not None or org_id == DEFAULT_ORG_ID:
                raise Refused("Only admins of the operator organisation disable or enable "
                              "organisations, and the operator organisation itself cannot "
                              "be disabled.")
            await self.db(lambda s: organizations.set_org_disabled(
                s, org_id, action == "disable", now, actor), True)
            # Records carry their organisation's state; other instances follow the events.
            self.deps.api_keys.keys.cache.clear()
            self.deps.client_cache.clear()
        elif action == "delete":
            if self.org_filter(signed) is not None:
                raise Refused("Only admins of the operator organisation delete "
                              "organisations.")
            gate = self.settings.approvals
            if gate.gates("organization.delete"):  # deleted on the final approval
                view = await self.db(lambda s: approvals.request_org_delete(
                    s, gate, org_id, now, actor), True)
                return self.requested(request, signed, view)
            await self.db(lambda s: organizations.delete_org(s, org_id, now, actor), True)
            self.deps.api_keys.keys.cache.clear()
            self.deps.client_cache.clear()
            return RedirectResponse(f"{PREFIX}/organizations?deleted={org_id}", 303)
        else:
            raise NotFound(f"no action {action}")
        return RedirectResponse(f"{PREFIX}/organizations?changed={org_id}", 303)
