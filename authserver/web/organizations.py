"""Organisations (`/api/v1/organizations`) and usage (`/api/v1/usage`) in the admin API; both
lists are paged (`limit`, `cursor`)."""

from __future__ import annotations

import re

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from authserver import approvals, organizations
from authserver.errors import insufficient_permissions, invalid_body
from authserver.usage import UsageRow, usage_report
from authserver.web.admin_api import (
    OPERATOR_ORG,
    AdminApi,
    Caller,
    body_str,
    decode_cursor,
    page,
    page_size,
)

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class OrganizationEndpoints(AdminApi):
    # -- /api/v1/organizations ------------------------------------------------------------

    async def list_orgs(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("organizations", "read")
        limit = page_size(request)
        after = decode_cursor(request, (float, str))
        scope = caller.org_filter()
        orgs = await self.read(lambda s: organizations.list_orgs(
            s, scope, after=(after[0], after[1]) if after else None, limit=limit))
        return self.respond(request, page(orgs, limit, lambda o: (o.created_at, o.id),
                                          organizations.OrgRecord.public_dict))

    async def create_org(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("organizations", "create")
        if not caller.operator:
            raise insufficient_permissions("organizations.create (operator organisation)")
        body = await self.body(request)
        name = body_str(body, "name") or ""
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
        name = body_str(body, "name")
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
        if disabled is not None:  # records carry their organisation's state
            self.key_cache.clear()
            self.client_cache.clear()
        return self.respond(request, org.public_dict())

    async def delete_org(self, request: Request) -> Response:
        """An organisation without clients, live API keys or people (else 409); operator
        callers only; quorum-approved when `organization.delete` is gated (202)."""
        caller = await self.caller(request)
        caller.need("organizations", "delete")
        org_id = self._org_in_scope(caller, request)
        if not caller.operator:
            raise insufficient_permissions("organizations.delete (operator organisation)")
        now = self.now()
        gate = self.settings.approvals
        if gate.gates("organization.delete"):
            view = await self.write(lambda s: approvals.request_org_delete(
                s, gate, org_id, now, caller.actor))
            return self.respond(request, view.public_dict(), 202)
        await self.write(lambda s: organizations.delete_org(s, org_id, now, caller.actor))
        self.key_cache.clear()
        self.client_cache.clear()
        return Response(status_code=204, headers={"cache-control": "no-store"})

    def _org_in_scope(self, caller: Caller, request: Request) -> str:
        org_id = str(request.path_params["org_id"])
        caller.in_scope(org_id)
        return org_id

    async def usage(self, request: Request) -> Response:
        """Requests and credits per subject (API key or client) and UTC day, and totals per
        organisation; `org_id`, `subject`, `since`, `until` (YYYY-MM-DD) filter."""
        caller = await self.caller(request)
        caller.need("usage", "read")
        query = request.query_params
        org_id = query.get("org_id") or caller.org_filter()
        caller.in_scope(org_id)
        for name in ("since", "until"):
            value = query.get(name)
            if value is not None and not _DAY.match(value):
                raise invalid_body(f"{name}: a day like 2026-11-24")
        limit = page_size(request)
        after = decode_cursor(request, (str, str))
        rows, totals = await self.read(lambda s: usage_report(
            s, org_id=org_id, subject=query.get("subject"), since=query.get("since"),
            until=query.get("until"), after=(after[0], after[1]) if after else None,
            limit=limit))
        return self.respond(request, {**page(rows, limit, lambda r: (r.day, r.subject),
                                             UsageRow.as_dict), "totals": totals})
