"""Operator pages: signing keys, registration (initial access) tokens, the audit log.

As in the admin API (web/admin_ops.py), signing-key rotation and registration tokens belong to
no organisation, so only admins of the operator organisation change them; the audit log shows
others their own organisation's entries."""

from __future__ import annotations

from datetime import UTC, datetime

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from authserver import audit, registration, users
from authserver.errors import Invalid, NotFound
from authserver.web.admin_ui.base import PREFIX, AdminUiBase, Refused, days

MAX_USES = 2**31 - 1


class OperatorPages(AdminUiBase):
    def operator_only(self, signed: users.SignedIn, what: str) -> None:
        if self.org_filter(signed) is not None:
            raise Refused(f"Only admins of the operator organisation {what}.")

    # -- signing keys ---------------------------------------------------------------------

    async def signing_keys(self, request: Request, signed: users.SignedIn) -> Response:
        now = self.deps.clock.now()
        await anyio.to_thread.run_sync(lambda: self.deps.keyring.load(now))
        return self.render(request, "keys.html", signed=signed,
                           keys=self.deps.keyring.snapshot(now).views,
                           operator=self.org_filter(signed) is None)

    async def rotate_key(self, request: Request, signed: users.SignedIn) -> Response:
        if self.org_filter(signed) is not None:
            return self.render(request, "error.html", 403, signed,
                               message="Only operators rotate signing keys.")
        ring, alg = self.deps.keyring, self.settings.signing.algorithm
        delay, clock = self.settings.signing.propagation_delay, self.deps.clock
        key = await anyio.to_thread.run_sync(
            lambda: ring.rotate(alg, clock.now(), delay, clock=clock.now))
        actor = self.actor(request, signed)
        await self.db(lambda s: audit.record(
            s, actor, "signing_key.rotate", key.kid, clock.now(),
            details={"alg": key.alg, "activate_at": key.activate_at}), write=True)
        return RedirectResponse(f"{PREFIX}/keys?rotated={key.kid}", 303)

    # -- registration tokens (RFC 7591 initial access tokens) -----------------------------

    async def token_list(self, request: Request, signed: users.SignedIn) -> Response:
        self.operator_only(signed, "see and issue registration tokens")
        found = await self.db(registration.list_access_tokens)
        return self.render(request, "registration_tokens.html", signed=signed,
                           tokens=list(reversed(found)), now=self.deps.clock.now(),
                           policy=self.settings.registration.policy,
                           open_scopes=" ".join(self.settings.registration.open_scopes))

    async def token_create(self, request: Request, signed: users.SignedIn) -> Response:
        self.operator_only(signed, "issue registration tokens")
        form, caller = self.form_of(request), self.caller(request, signed)
        scopes = tuple(form.values.get("scopes", "").split()) or \
            tuple(self.settings.registration.open_scopes)
        caller.may_grant(scopes)
        raw_uses = form.values.get("max_uses", "").strip()
        if raw_uses and not (raw_uses.isascii() and raw_uses.isdigit()
                             and 1 <= int(raw_uses) <= MAX_USES):
            raise Invalid(f"max uses: a whole number from 1 to {MAX_USES}, or empty for "
                          "no limit")
        expiry = days(form.values.get("expires_in_days", ""))
        now = self.deps.clock.now()
        new = await self.db(lambda s: registration.create_access_token(
            s, self.deps.catalog, now, scopes=scopes,
            max_uses=int(raw_uses) if raw_uses else None,
            expires_in=expiry * 86400.0 if expiry else None,
            description=form.values.get("description", "").strip(), actor=caller.actor),
            write=True)
        return self.render(request, "registration_token_created.html", 201, signed,
                           view=new.view, token=new.token)

    async def token_revoke(self, request: Request, signed: users.SignedIn) -> Response:
        self.operator_only(signed, "revoke registration tokens")
        token_id, now = request.path_params["token_id"], self.deps.clock.now()
        if not token_id.startswith(registration.ID_PREFIX):  # never echo a pasted token
            raise NotFound("no such registration token (ids start with iat_)")
        actor = self.actor(request, signed)
        await self.db(lambda s: registration.revoke_access_token(s, token_id, now, actor),
                      write=True)
        return RedirectResponse(f"{PREFIX}/registration-tokens", 303)

    # -- audit log ------------------------------------------------------------------------

    async def audit_log(self, request: Request, signed: users.SignedIn) -> Response:
        params = request.query_params
        before = params.get("before") or None
        if before is not None and not (before.isascii() and before.isdigit()
                                       and int(before) < 2**63):
            raise Invalid("before: an entry number")
        query = audit.AuditQuery(
            actor=params.get("actor") or None, action=params.get("action") or None,
            target=params.get("target") or None, org_id=self.org_filter(signed),
            since=_utc_minute(params.get("since"), "since"),
            until=_utc_minute(params.get("until"), "until", end=True),
            before_id=int(before) if before else None, limit=100)
        entries = await self.db(lambda s: audit.read(s, query))
        return self.render(request, "audit.html", signed=signed, entries=entries,
                           filters={k: params.get(k, "") for k in AUDIT_FILTERS},
                           next_before=entries[-1].id if len(entries) == 100 else None)


AUDIT_FILTERS = ("actor", "action", "target", "since", "until")


def _utc_minute(value: str | None, name: str, end: bool = False) -> float | None:
    """A `datetime-local` field's value (YYYY-MM-DDTHH:MM, read as UTC) as a timestamp: the
    minute's start, or with `end` its last instant (an "until" includes its minute)."""
    if not value:
        return None
    try:
        moment = datetime.strptime(value, "%Y-%m-%dT%H:%M")
    except ValueError as exc:
        raise Invalid(f"{name}: a time like 2026-11-24T13:05 (UTC)") from exc
    return moment.replace(tzinfo=UTC).timestamp() + (59.999999 if end else 0.0)
