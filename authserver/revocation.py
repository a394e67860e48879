"""What makes a token dead before its `exp`: the client's cutoff and the `jti` deny-list.

A change to a client sets its cutoff (`clients.cutoff`); RFC 7009 revocation of one token puts
its `jti` on the deny-list until the token's `exp`. A person's tokens have cutoffs of their own:
one for all of the person's tokens (disabled, or signed out everywhere) and one per client (a
consent revoked), as `subject.cutoff` events. Both are events in the append-only log,
written in the transaction of the change, so every instance (and every resource server reading
the SET feed) learns of them.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import anyio.to_thread
from sqlalchemy import Table, delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from authserver import audit, events
from authserver.clients import ClientDirectory, cutoff
from authserver.clients.records import ClientRecord
from authserver.clock import Clock
from authserver.errors import TemporarilyUnavailable
from authserver.keyring import Keyring
from authserver.storage.db import Database, insert_if_absent
from authserver.storage.models import Consent, Event, RevokedToken, User
from authserver.tokens import verify_access_token


def deny_token(
    session: Session, jti: str, client_id: str, exp: float, now: float,
    actor: audit.Actor = audit.SYSTEM,
) -> bool:
    """Put a token on the deny-list until `exp`; False (and no event) when it already is, also
    when a concurrent revocation of the same token got there first."""
    values = {"jti": jti, "client_id": client_id, "exp": exp, "revoked_at": now}
    if not insert_if_absent(session, cast(Table, RevokedToken.__table__), values, "jti"):
        return False
    events.record(session, "token.revoked", client_id, now, None,
                  {"jti": jti, "client_id": client_id, "exp": exp})
    audit.record(session, actor, "token.revoke", jti, now,
                 details={"client_id": client_id, "exp": exp})
    return True


def cut_off_subject(
    session: Session, user_id: str, client_id: str | None, now: float, reason: str,
    org_id: str | None = None,
) -> float:
    """Record that the person's tokens (for one client, or for every client when `client_id`
    is None) issued until `now` are dead; returns the cutoff (whole seconds, as a client's),
    which the caller stores on its row."""
    after = cutoff(now)
    events.record(session, "subject.cutoff", user_id, now, org_id,
                  {"user_id": user_id, "client_id": client_id, "tokens_valid_after": after,
                   "reason": reason})
    return after


def stored_subject_cutoff(session: Session, user_id: str, client_id: str) -> float:
    """The person's cutoff for tokens of this client, read from the store."""
    user = session.get(User, user_id)
    if user is None:  # deleted: every token of theirs is dead
        return math.inf
    consent = session.get(Consent, (user_id, client_id))
    return max(user.tokens_valid_after,
               consent.tokens_valid_after if consent else 0.0)


def purge_denied(session: Session, now: float) -> int:
    """Drop deny-list rows of tokens that have expired anyway."""
    result = session.execute(delete(RevokedToken).where(RevokedToken.exp < now))
    return int(result.rowcount)  # type: ignore[attr-defined]


class DenyList:
    """The deny-list in memory: loaded at start, then kept by `token.revoked` events. While the
    event log cannot be followed it is `stale` (it may miss another instance's revocations), and
    readers ask the store instead."""

    def __init__(self, horizon: float = 86400.0) -> None:
        self._exp: dict[str, float] = {}
        # (user id, client id or "" for every client) -> tokens issued before are dead.
        self._subjects: dict[tuple[str, str], float] = {}
        # A cutoff older than this many seconds can no longer match a live token.
        self.horizon = horizon
        self.stale = False

    def load(self, session: Session, now: float) -> None:
        rows = session.execute(select(RevokedToken.jti, RevokedToken.exp)
                               .where(RevokedToken.exp >= now))
        self._exp = {jti: exp for jti, exp in rows}
        since = now - self.horizon
        subjects: dict[tuple[str, str], float] = {}
        for user_id, after in session.execute(select(User.id, User.tokens_valid_after)
                                              .where(User.tokens_valid_after >= since)):
            subjects[(user_id, "")] = after
        for user_id, client_id, after in session.execute(
                select(Consent.user_id, Consent.client_id, Consent.tokens_valid_after)
                .where(Consent.tokens_valid_after >= since)):
            subjects[(user_id, client_id)] = after
        # A deleted person's cutoff lives on only in the event log.
        for data in session.scalars(select(Event.data).where(
                Event.type == "subject.cutoff", Event.created_at >= since)):
            key = (str(data["user_id"]), data.get("client_id") or "")
            subjects[key] = max(subjects.get(key, 0.0), float(data["tokens_valid_after"]))
        self._subjects = subjects

    def add(self, jti: str, exp: float) -> None:
        self._exp[jti] = exp

    def cut_off(self, user_id: str, client_id: str | None, after: float) -> None:
        key = (user_id, client_id or "")
        self._subjects[key] = max(self._subjects.get(key, 0.0), after)

    def apply(self, fresh: Iterable[events.EventRecord]) -> None:
        for event in fresh:
            if event.type == "token.revoked":
                self.add(str(event.data["jti"]), float(event.data["exp"]))
            elif event.type == "subject.cutoff":
                self.cut_off(str(event.data["user_id"]), event.data.get("client_id"),
                             float(event.data["tokens_valid_after"]))

    def __contains__(self, jti: str) -> bool:
        return jti in self._exp

    def subject_cutoff(self, user_id: str, client_id: str) -> float:
        """Tokens of this person for this client issued before the answer are dead."""
        if not self._subjects:
            return 0.0
        return max(self._subjects.get((user_id, ""), 0.0),
                   self._subjects.get((user_id, client_id), 0.0))

    def purge(self, now: float) -> None:
        self._exp = {jti: exp for jti, exp in self._exp.items() if exp >= now}
        since = now - self.horizon
        self._subjects = {k: v for k, v in self._subjects.items() if v >= since}


def stored_denial(session: Session, jti: str) -> bool:
    return session.get(RevokedToken, jti) is not None


def token_state(
    claims: dict[str, Any], client: ClientRecord | None, denied: bool, now: float,
    subject_after: float = 0.0,
) -> str | None:
    """Why a verified token is dead, or None when it is alive."""
    if claims["exp"] <= now:
        return "expired"
    if client is None or client.client_id != claims["client_id"]:
        return "client unknown"
    if not client.active:
        return "client disabled"
    if claims["iat"] < client.tokens_valid_after:
        return "cut off"
    if claims["iat"] < subject_after:
        return "person cut off"
    if denied:
        return "revoked"
    return None


class TokenInspector:
    """Reads our own access tokens back: signature, issuer, then the revocation state."""

    def __init__(
        self, issuer: str, clock: Clock, keyring: Keyring, clients: ClientDirectory,
        denied: DenyList, db: Database,
    ) -> None:
        self.issuer = issuer
        self.clock = clock
        self.keyring = keyring
        self.clients = clients
        self.denied = denied
        self.db = db
        # Finds clients the directory does not hold too (metadata documents); set by wiring.
        self.lookup: Callable[[str], Awaitable[ClientRecord | None]] = clients.get

    def verified(self, token: str) -> dict[str, Any] | None:
        """Claims when we signed it (expired or not), else None."""
        snapshot = self.keyring.snapshot(self.clock.now())
        return verify_access_token(token, snapshot.published, self.issuer)

    async def active(self, token: str) -> dict[str, Any] | None:
        """Claims of a token that is alive right now, else None (RFC 7662 `active`)."""
        now = self.clock.now()
        claims = self.verified(token)
        if claims is None:
            return None
        client = await self.lookup(claims["client_id"])
        denied, after = await self._revoked(claims)
        return claims if token_state(claims, client, denied, now, after) is None else None

    async def _revoked(self, claims: dict[str, Any]) -> tuple[bool, float]:
        """(on the deny-list, the person's cutoff): from memory, or from the store while the
        event log is not being followed."""
        jti, sub, client_id = str(claims["jti"]), str(claims.get("sub", "")), claims["client_id"]
        person = sub != client_id
        if not self.denied.stale:
            return jti in self.denied, \
                self.denied.subject_cutoff(sub, client_id) if person else 0.0

        def read() -> tuple[bool, float]:
            with self.db.session() as session:
                return stored_denial(session, jti), \
                    stored_subject_cutoff(session, sub, client_id) if person else 0.0
        try:
            return await anyio.to_thread.run_sync(read)
        except SQLAlchemyError as exc:
            raise TemporarilyUnavailable("The revocation store is unavailable; retry shortly",
                                         detail=type(exc).__name__) from exc
