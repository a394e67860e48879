"""Client pages: list and search, create (secret shown once), edit, rotate, disable, delete;
the self-registered clients with their software, last use and origin."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from authserver import approvals, clients, registration, users
from authserver.errors import NotFound
from authserver.storage.models import DEFAULT_ORG_ID
from authserver.web.admin_ui.base import PREFIX, AdminUiBase


class ClientPages(AdminUiBase):
    async def client_list(self, request: Request, signed: users.SignedIn) -> Response:
        query = request.query_params.get("q") or None
        origin = request.query_params.get("origin")
        if origin == "registered":  # the self-registered clients have their own page
            return RedirectResponse(f"{PREFIX}/registered-clients", 303)
        origin = origin if origin in ("admin", "dcr") else None
        found = await self.db(lambda s: clients.list_clients(
            s, self.org_filter(signed), origin, name_contains=query, limit=500))
        return self.render(request, "clients.html", signed=signed, clients=found,
                           q=query or "", origin=origin or "")

    async def registered_list(self, request: Request, signed: users.SignedIn) -> Response:
        """What `authserver clients list --registered` shows."""
        found = await self.db(lambda s: registration.list_registered(
            s, self.org_filter(signed)))
        return self.render(request, "registered.html", signed=signed, registered=found,
                           policy=self.settings.registration.policy)

    async def client_create(self, request: Request, signed: users.SignedIn) -> Response:
        form = self.form_of(request)
        spec = clients.ClientSpec(
            name=form.values.get("name", ""),
            scopes=tuple(" ".join(form.repeated.get("scope", [])).split()),
            ip_allow=tuple(v for v in form.values.get("ip_allow_text", "").split() if v),
            org_id=signed.user.org_id if self.org_filter(signed) else
            form.values.get("org_id", DEFAULT_ORG_ID))
        now = self.deps.clock.now()
        record, secret = await self.db(lambda s: clients.create_client(
            s, self.deps.catalog, spec, now, actor=self.actor(request, signed)), write=True)
        return self.render(request, "client_created.html", 201, signed, client=record,
                           secret=secret)

    async def client_detail(self, request: Request, signed: users.SignedIn) -> Response:
        record = await self.own_client(request, signed)
        return self.render(request, "client.html", signed=signed, client=record,
                           scope_text=" ".join(sorted(record.scopes)),
                           ip_text="\n".join(str(n) for n in record.ip_allow),
                           resources_text="\n".join(sorted(record.resources)))

    async def client_update(self, request: Request, signed: users.SignedIn) -> Response:
        record = await self.own_client(request, signed)
        form = self.form_of(request)
        change = clients.ClientUpdate(
            name=form.values.get("name"),
            scopes=tuple(form.values.get("scope_text", "").split()),
            ip_allow=tuple(form.values.get("ip_allow_text", "").split()),
            resources=tuple(form.values.get("resources_text", "").split()))
        now = self.deps.clock.now()
        await self.db(lambda s: clients.update_client(
            s, self.deps.catalog, record.client_id, change, now, self.actor(request, signed)),
            write=True)
        self.deps.client_cache.invalidate([record.client_id])
        return RedirectResponse(f"{PREFIX}/clients/{record.client_id}?saved=1", 303)

    async def client_action(self, request: Request, signed: users.SignedIn) -> Response:
        record = await self.own_client(request, signed)
        action = request.path_params["action"]
        now, actor, cid = self.deps.clock.now(), self.actor(request, signed), record.client_id
        if action == "rotate-secret":
            secret = await self.db(lambda s: clients.rotate_secret(s, cid, now, actor), True)
            self.deps.client_cache.invalidate([cid])
            return self.render(request, "client_created.html", 200, signed, client=record,
                               secret=secret, rotated=True)
        if action in ("disable", "enable"):
            await self.db(lambda s: clients.set_disabled(s, cid, action == "disable", now,
                                                         actor), True)
        elif action == "delete":
            gate = self.settings.approvals
            if gate.gates("client.delete"):  # deleted on the final approval
                view = await self.db(lambda s: approvals.request_client_delete(
                    s, gate, cid, now, actor), True)
                return self.requested(request, signed, view)
            await self.db(lambda s: clients.delete_client(s, cid, now, actor), True)
            self.deps.client_cache.invalidate([cid])
            return RedirectResponse(f"{PREFIX}/clients", 303)
        else:
            raise NotFound(f"no action {action}")
        self.deps.client_cache.invalidate([cid])
        return RedirectResponse(f"{PREFIX}/clients/{cid}", 303)

    async def own_client(self, request: Request, signed: users.SignedIn) -> clients.ClientRecord:
        client_id = request.path_params["client_id"]
        record: clients.ClientRecord = await self.db(lambda s: clients.get_client(s, client_id))
        if self.org_filter(signed) not in (None, record.org_id):
            raise NotFound(f"no client {client_id}")
        return record
