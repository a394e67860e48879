"""People pages: list with role, status and last sign-in; create; a person's page to edit the
profile and role, set a new password, disable or enable (disabling ends every token they hold
and their sessions), delete, and see and revoke their consents.

The admin API's rules (web/users_admin.py): an admin of the operator organisation sees and
manages everyone, an admin of another organisation only that organisation's people. Nobody
disables, deletes or demotes themselves here (another admin, or the CLI, can)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from authserver import organizations, users
from authserver.errors import Invalid, NotFound
from authserver.people import accounts, consents
from authserver.storage.models import DEFAULT_ORG_ID, Client, Consent
from authserver.web.admin_ui.base import PREFIX, AdminUiBase, Refused
from authserver.web.users_admin import ADMIN_PERMISSIONS, MAX_CLIENT_ID


class UserPages(AdminUiBase):
    async def user_list(self, request: Request, signed: users.SignedIn) -> Response:
        scope = self.org_filter(signed)
        found = await self.db(lambda s: users.page_users(s, scope, limit=500))
        orgs = await self.db(organizations.list_orgs) if scope is None else []
        return self.render(request, "users.html", signed=signed, people=found, orgs=orgs,
                           operator=scope is None,
                           changed=request.query_params.get("changed", ""),
                           deleted=request.query_params.get("deleted", ""))

    async def user_create(self, request: Request, signed: users.SignedIn) -> Response:
        form = self.form_of(request).values
        role = form.get("role", "user")
        if role not in users.ROLES:
            raise Invalid("role: admin or user")
        if role == "admin":
            self.caller(request, signed).may_grant(ADMIN_PERMISSIONS)
        org_id = signed.user.org_id if self.org_filter(signed) else \
            form.get("org_id", DEFAULT_ORG_ID)
        email, now, actor = form.get("email", ""), self.deps.clock.now(), \
            self.actor(request, signed)

        def create(session: Session) -> users.UserRecord:
            return users.create_user(
                session, form.get("username", ""), form.get("password", ""), now, actor,
                role=role, org_id=org_id, name=users.check_name(form.get("name", "")),
                email=users.check_email(email) if email.strip() else None,
                email_verified=form.get("email_verified") == "1")

        record: users.UserRecord = await self.db(create, write=True)
        return RedirectResponse(f"{PREFIX}/users?changed={record.id}", 303)

    async def user_detail(self, request: Request, signed: users.SignedIn) -> Response:
        person = await self.own_user(request, signed)
        now = self.deps.clock.now()

        def read(session: Session) -> list[dict[str, Any]]:
            views = consents.list_for(session, person.id, now)
            names = {cid: name for cid, name in session.execute(
                select(Client.client_id, Client.name).where(
                    Client.client_id.in_([v.client_id for v in views])))} if views else {}
            return [{"view": v, "name": names.get(v.client_id)} for v in views]

        rows = await self.db(read)
        return self.render(request, "user.html", signed=signed, person=person,
                           consents=rows, myself=person.id == signed.user.id,
                           saved=request.query_params.get("saved", ""))

    async def user_action(self, request: Request, signed: users.SignedIn) -> Response:
        person = await self.own_user(request, signed)
        action, form = request.path_params["action"], self.form_of(request).values
        user_id, now, actor = person.id, self.deps.clock.now(), self.actor(request, signed)
        myself = user_id == signed.user.id
        if action == "update":
            change = users.UserChange(
                name=form.get("name", ""), email=form.get("email", ""),
                email_verified=form.get("email_verified") == "1",
                role=form.get("role", person.role))
            if myself and change.role != person.role:
                raise Refused("You cannot change your own role: ask another admin.")
            if change.role == "admin" and person.role != "admin":
                self.caller(request, signed).may_grant(ADMIN_PERMISSIONS)
            await self.db(lambda s: users.update_user(s, user_id, change, now, actor), True)
        elif action == "password":
            if person.role == "admin":
                self.caller(request, signed).may_grant(ADMIN_PERMISSIONS)
            password = form.get("password", "")
            await self.db(lambda s: users.set_password(s, user_id, password, now, actor),
                          True)
        elif action in ("disable", "enable", "delete"):
            if myself and action != "enable":
                raise Refused(f"You cannot {action} yourself: ask another admin.")
            if action == "delete":
                await self.db(lambda s: accounts.delete_user(s, user_id, now, actor), True)
                return RedirectResponse(f"{PREFIX}/users?deleted={user_id}", 303)
            status = "disabled" if action == "disable" else "active"
            await self.db(lambda s: accounts.set_status(s, user_id, status, now, actor), True)
        elif action == "revoke-consent":
            client_id = form.get("client_id", "")
            if not client_id or len(client_id) > MAX_CLIENT_ID:
                raise Invalid("No client was named.")

            def revoke(session: Session) -> None:
                if session.get(Consent, (user_id, client_id)) is None:
                    raise NotFound("This person has no consent for that client.")
                consents.revoke(session, user_id, client_id, now, actor)

            await self.db(revoke, True)
        else:
            raise NotFound(f"no action {action}")
        return RedirectResponse(f"{PREFIX}/users/{user_id}?saved={action}", 303)

    async def own_user(self, request: Request, signed: users.SignedIn) -> users.UserRecord:
        """The person of the path, 404 also for one of an organisation this admin cannot
        see (their existence is not revealed)."""
        user_id = request.path_params["user_id"]
        record: users.UserRecord = await self.db(lambda s: users.get_user(s, user_id))
        if self.org_filter(signed) not in (None, record.org_id):
            raise NotFound(f"no user {user_id}")
        return record
