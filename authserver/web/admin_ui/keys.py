"""API key pages: list, create (the key shown once), edit (name, permissions, IP allowlist,
expiry), rotate with a grace period, revoke. Changes follow the admin API's rules: a person
hands out only permissions they hold, and changes only keys whose permissions they hold."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from authserver import apikeys, approvals, organizations, users
from authserver.apikeys import ApiKeyRecord
from authserver.apikeys.format import Environment
from authserver.approvals import ApprovalView
from authserver.errors import Invalid, NotFound
from authserver.storage.models import DEFAULT_ORG_ID
from authserver.web.admin_api import Caller
from authserver.web.admin_ui.base import PREFIX, AdminUiBase, days

MAX_GRACE_HOURS = 720


class ApiKeyPages(AdminUiBase):
    async def key_list(self, request: Request, signed: users.SignedIn) -> Response:
        revoked = request.query_params.get("revoked") == "1"
        now = self.deps.clock.now()
        found = await self.db(lambda s: apikeys.list_keys(
            s, self.org_filter(signed), include_revoked=revoked, limit=500))
        orgs = await self.db(organizations.list_orgs) if self.org_filter(signed) is None else []
        return self.render(request, "api_keys.html", signed=signed, keys=found, now=now,
                           revoked=revoked, orgs=orgs)

    async def key_create(self, request: Request, signed: users.SignedIn) -> Response:
        form = self.form_of(request)
        now = self.deps.clock.now()
        expiry = days(form.values.get("expires_in_days", ""))
        org_id = signed.user.org_id if self.org_filter(signed) else \
            form.values.get("org_id", DEFAULT_ORG_ID)
        environment: Environment = "test" if form.values.get("environment") == "test" \
            else "live"
        permissions = tuple(form.values.get("permissions", "").split())
        self.caller(request, signed).may_grant(permissions)
        spec = apikeys.ApiKeySpec(
            name=form.values.get("name", ""), org_id=org_id, permissions=permissions,
            environment=environment,
            ip_allow=tuple(form.values.get("ip_allow_text", "").split()),
            expires_at=now + expiry * 86400 if expiry else None)
        gated = approvals.key_action(self.settings.approvals, self.deps.catalog, permissions)
        if gated is not None:  # made at its requester's reveal, after approval
            view = await self.db(lambda s: approvals.request_key(
                s, self.settings.approvals, self.deps.catalog, gated,
                replace(spec, expires_at=None), now, self.actor(request, signed),
                expires_in=expiry * 86400.0 if expiry else None), write=True)
            return self.requested(request, signed, view)
        record, key = await self.db(lambda s: apikeys.create_key(
            s, self.deps.catalog, spec, self.settings.api_keys.prefix, now,
            self.actor(request, signed)), write=True)
        return self.render(request, "api_key_created.html", 201, signed, key_record=record,
                           key=key)

    async def key_detail(self, request: Request, signed: users.SignedIn,
                         notice: str = "") -> Response:
        key_id = self.key_id(request)
        record: ApiKeyRecord = await self.db(lambda s: apikeys.get_key(
            s, key_id, self.org_filter(signed)))
        return self.render(request, "api_key.html", signed=signed, key_record=record,
                           now=self.deps.clock.now(), notice=notice,
                           saved=request.query_params.get("saved") == "1",
                           ip_text="\n".join(str(n) for n in record.ip_allow))

    async def key_update(self, request: Request, signed: users.SignedIn) -> Response:
        """Only what differs from the key is sent to the domain (and audited)."""
        key_id, form = self.key_id(request), self.form_of(request)
        caller, now = self.caller(request, signed), self.deps.clock.now()
        expiry = days(form.values.get("expires_in_days", ""))
        never = form.values.get("no_expiry") == "1"
        if never and expiry is not None:
            raise Invalid("expiry: give a number of days or tick “never expires”, not both")
        name = form.values.get("name", "").strip()
        permissions = tuple(form.values.get("permissions", "").split())
        ip_allow = tuple(form.values.get("ip_allow_text", "").split())

        def change(session: Session) -> ApiKeyRecord | ApprovalView | None:
            current = self.may_change(session, caller, key_id)
            update = apikeys.ApiKeyUpdate(
                name=name if name != current.name else None,
                permissions=permissions if permissions != current.permissions else None,
                ip_allow=ip_allow if ip_allow != tuple(str(n) for n in current.ip_allow)
                else None,
                expires_at=now + expiry * 86400 if expiry else None,
                clear_expiry=never and current.expires_at is not None)
            if update.permissions is not None:
                caller.may_grant(update.permissions)
            if update == apikeys.ApiKeyUpdate():
                return None
            if approvals.key_update_action(self.settings.approvals, self.deps.catalog,
                                           current.permissions, update.permissions):
                # As PATCH in the admin API: the whole change waits for the quorum.
                return approvals.request_key_update(
                    session, self.settings.approvals, self.deps.catalog, key_id, update, now,
                    caller.actor, caller.org_filter())
            return apikeys.update_key(session, self.deps.catalog, key_id, update, now,
                                      caller.actor, caller.org_filter())

        record = await self.db(change, write=True)
        if record is None:
            return await self.key_detail(request, signed, "Nothing changed.")
        if isinstance(record, ApprovalView):
            return self.requested(request, signed, record)
        self.deps.api_keys.keys.cache.invalidate([key_id])
        return RedirectResponse(f"{PREFIX}/api-keys/{key_id}?saved=1", 303)

    async def key_action(self, request: Request, signed: users.SignedIn) -> Response:
        key_id, action = self.key_id(request), request.path_params["action"]
        caller, now = self.caller(request, signed), self.deps.clock.now()
        org = caller.org_filter()
        if action == "rotate":
            hours = self.form_of(request).values.get("grace_hours", "0").strip() or "0"
            if not (hours.isascii() and hours.isdigit() and int(hours) <= MAX_GRACE_HOURS):
                raise Invalid(f"grace period: 0 to {MAX_GRACE_HOURS} hours")

            def rotate(session: Session) -> tuple[ApiKeyRecord, str]:
                self.may_change(session, caller, key_id)
                return apikeys.rotate_key(session, key_id, self.settings.api_keys.prefix,
                                          now, caller.actor, grace=int(hours) * 3600.0,
                                          org_id=org)

            record, key = await self.db(rotate, write=True)
            self.deps.api_keys.keys.cache.invalidate([key_id])
            return self.render(request, "api_key_created.html", 201, signed,
                               key_record=record, key=key, rotated=key_id)
        if action != "revoke":
            raise NotFound(f"no action {action}")

        def revoke(session: Session) -> ApiKeyRecord:
            self.may_change(session, caller, key_id)
            return apikeys.revoke_key(session, key_id, now, caller.actor, org)

        await self.db(revoke, write=True)
        self.deps.api_keys.keys.cache.invalidate([key_id])
        return RedirectResponse(f"{PREFIX}/api-keys", 303)

    def key_id(self, request: Request) -> str:
        """The id in the path; a whole key pasted there is refused without echoing it."""
        key_id = str(request.path_params["key_id"])
        if apikeys.looks_like_key(key_id, self.settings.api_keys.prefix):
            raise Invalid("That is an API key, not its id (key_...); the key was not used, "
                          "but treat it as exposed and rotate it")
        return key_id

    @staticmethod
    def may_change(session: Session, caller: Caller, key_id: str) -> ApiKeyRecord:
        """As the admin API: a key changes only in the hands of someone holding every
        permission it has (else loosening or rotating it would hand those over)."""
        current = apikeys.get_key(session, key_id, caller.org_filter(), lock=True)
        caller.may_grant(current.permissions)
        return current
