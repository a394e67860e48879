"""People in the admin API (`/api/v1/users`): list, create, show, change, disable, enable and
delete a person, and list or revoke their consents. The same domain functions as the admin UI
and the CLI; never a password hash in an answer.

Permissions `users.read|create|update|delete` (revoking a consent is `users.update`, like
disabling). A caller sees the people of its own organisation (the operator's, everyone). A
person with role `admin` holds every permission within their organisation in the admin UI, so
making someone an admin, or setting an admin's password, needs a caller holding `*`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from authserver import users
from authserver.errors import NotFound, invalid_body, not_found
from authserver.people import accounts, consents
from authserver.storage.models import Consent
from authserver.web.admin_api import (
    AdminApi,
    Caller,
    body_str,
    decode_cursor,
    page,
    page_size,
)

_STATUSES = ("active", "disabled")
# What a person with role admin holds in the admin UI (web/admin_ui/base.py).
ADMIN_PERMISSIONS = ("*",)
MAX_CLIENT_ID = 2000  # consents.client_id: a registered id or a metadata-document URL


def _bool(body: dict[str, Any], name: str) -> bool | None:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise invalid_body(f"{name}: must be true or false")
    return value


def consent_dict(view: consents.ConsentView) -> dict[str, Any]:
    return {"client_id": view.client_id, "scopes": list(view.scopes),
            "granted_at": view.granted_at, "expires_at": view.expires_at}


class UserEndpoints(AdminApi):
    async def _own(self, caller: Caller, user_id: str) -> users.UserRecord:
        """The person, 404 also when they belong to an organisation the caller cannot see."""
        record: users.UserRecord = await self.read(lambda s: users.get_user(s, user_id))
        if caller.org_filter() not in (None, record.org_id):
            raise not_found(f"no user {user_id}")
        return record

    async def list_users(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("users", "read")
        query = request.query_params
        org_id = query.get("org_id") or caller.org_filter()
        caller.in_scope(org_id)
        role, status = query.get("role"), query.get("status")
        if role not in (None, *users.ROLES):
            raise invalid_body("role: admin or user")
        if status not in (None, *_STATUSES):
            raise invalid_body("status: active or disabled")
        limit = page_size(request)
        after = decode_cursor(request, (float, str))
        found = await self.read(lambda s: users.page_users(
            s, org_id, role=role, status=status,
            after=(after[0], after[1]) if after else None, limit=limit))
        return self.respond(request, page(found, limit, lambda u: (u.created_at, u.id),
                                          users.UserRecord.public_dict))

    async def create_user(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("users", "create")
        body = await self.body(request)
        username, password = body_str(body, "username"), body_str(body, "password")
        if username is None or password is None:
            raise invalid_body("username and password: required")
        role = body_str(body, "role") or "user"
        if role not in users.ROLES:
            raise invalid_body("role: admin or user")
        if role == "admin":
            caller.may_grant(ADMIN_PERMISSIONS)
        org_id = body_str(body, "org_id") or caller.org_id
        caller.in_scope(org_id)
        email = body_str(body, "email")
        name = body_str(body, "name")
        verified = _bool(body, "email_verified")
        now = self.now()

        def create(session: Session) -> users.UserRecord:
            return users.create_user(
                session, username, password, now, caller.actor, role=role, org_id=org_id,
                email=users.check_email(email) if email else None,
                name=users.check_name(name or ""), email_verified=bool(verified))

        record = await self.write(create)
        return self.respond(request, record.public_dict(), 201)

    async def show_user(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("users", "read")
        record = await self._own(caller, request.path_params["user_id"])
        return self.respond(request, record.public_dict())

    async def update_user(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("users", "update")
        user_id = request.path_params["user_id"]
        record = await self._own(caller, user_id)
        body = await self.body(request)
        change = users.UserChange(
            name=body_str(body, "name"), email=body_str(body, "email"),
            email_verified=_bool(body, "email_verified"), role=body_str(body, "role"),
            password=body_str(body, "password"))
        # Making an admin, or taking over one's password, hands out what an admin holds.
        if (change.role == "admin" and record.role != "admin") or \
                (change.password is not None and "admin" in (record.role, change.role)):
            caller.may_grant(ADMIN_PERMISSIONS)
        now = self.now()
        updated = await self.write(lambda s: users.update_user(
            s, user_id, change, now, caller.actor))
        return self.respond(request, updated.public_dict())

    async def set_status(self, request: Request) -> Response:
        """Disable (every token the person holds dies, their sessions end) or enable."""
        caller = await self.caller(request)
        caller.need("users", "update")
        user_id = request.path_params["user_id"]
        await self._own(caller, user_id)
        status = "disabled" if request.url.path.endswith("/disable") else "active"
        now = self.now()
        record = await self.write(lambda s: accounts.set_status(
            s, user_id, status, now, caller.actor))
        return self.respond(request, record.public_dict())

    async def delete_user(self, request: Request) -> Response:
        caller = await self.caller(request)
        caller.need("users", "delete")
        user_id = request.path_params["user_id"]
        await self._own(caller, user_id)
        now = self.now()
        await self.write(lambda s: accounts.delete_user(s, user_id, now, caller.actor))
        return Response(status_code=204, headers={"cache-control": "no-store"})

    async def list_consents(self, request: Request) -> Response:
        """The person's live consents (not paged: one per client at most)."""
        caller = await self.caller(request)
        caller.need("users", "read")
        user_id = request.path_params["user_id"]
        await self._own(caller, user_id)
        now = self.now()
        views = await self.read(lambda s: consents.list_for(s, user_id, now))
        return self.respond(request, {"data": [consent_dict(v) for v in views]})

    async def revoke_consent(self, request: Request) -> Response:
        """End the consent to `?client_id=` and every token the person holds for that client;
        404 when the person never consented to it, 204 otherwise (also when already
        revoked)."""
        caller = await self.caller(request)
        caller.need("users", "update")
        user_id = request.path_params["user_id"]
        await self._own(caller, user_id)
        client_id = request.query_params.get("client_id", "")
        if not client_id or len(client_id) > MAX_CLIENT_ID:
            raise invalid_body(f"client_id: required, up to {MAX_CLIENT_ID} characters")
        now = self.now()

        def revoke(session: Session) -> None:
            if session.get(Consent, (user_id, client_id)) is None:
                raise NotFound(f"no consent of {user_id} for this client")
            consents.revoke(session, user_id, client_id, now, caller.actor)

        await self.write(revoke)
        return Response(status_code=204, headers={"cache-control": "no-store"})
