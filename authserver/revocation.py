"""What makes a token dead before its `exp`: the client's cutoff and the `jti` deny-list.

A change to a client sets its cutoff (`clients.cutoff`); RFC 7009 revocation of one token puts
its `jti` on the deny-list until the token's `exp`. Both are events in the append-only log,
written in the transaction of the change, so every instance (and every resource server reading
the SET feed) learns of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import anyio.to_thread
from sqlalchemy import Table, delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from authserver import audit, events
from authserver.clients import ClientDirectory
from authserver.clients.records import ClientRecord
from authserver.clock import Clock
from authserver.errors import TemporarilyUnavailable
from authserver.keyring import Keyring
from authserver.storage.db import Database, insert_if_absent
from authserver.storage.models import RevokedToken
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


def purge_denied(session: Session, now: float) -> int:
    """Drop deny-list rows of tokens that have expired anyway."""
    result = session.execute(delete(RevokedToken).where(RevokedToken.exp < now))
    return int(result.rowcount)  # type: ignore[attr-defined]


class DenyList:
    """The deny-list in memory: loaded at start, then kept by `token.revoked` events. While the
    event log cannot be followed it is `stale` (it may miss another instance's revocations), and
    readers ask the store instead."""

    def __init__(self) -> None:
        self._exp: dict[str, float] = {}
        self.stale = False

    def load(self, session: Session, now: float) -> None:
        rows = session.execute(select(RevokedToken.jti, RevokedToken.exp)
                               .where(RevokedToken.exp >= now))
        self._exp = {jti: exp for jti, exp in rows}

    def add(self, jti: str, exp: float) -> None:
        self._exp[jti] = exp

    def apply(self, fresh: Iterable[events.EventRecord]) -> None:
        for event in fresh:
            if event.type == "token.revoked":
                self.add(str(event.data["jti"]), float(event.data["exp"]))

    def __contains__(self, jti: str) -> bool:
        return jti in self._exp

    def purge(self, now: float) -> None:
        self._exp = {jti: exp for jti, exp in self._exp.items() if exp >= now}


def stored_denial(session: Session, jti: str) -> bool:
    return session.get(RevokedToken, jti) is not None


def token_state(
    claims: dict[str, Any], client: ClientRecord | None, denied: bool, now: float
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
        client = await self.clients.get(claims["client_id"])
        denied = await self._denied(str(claims["jti"]))
        return claims if token_state(claims, client, denied, now) is None else None

    async def _denied(self, jti: str) -> bool:
        if not self.denied.stale:
            return jti in self.denied
        try:
            return await anyio.to_thread.run_sync(self._stored_denial, jti)
        except SQLAlchemyError as exc:
            raise TemporarilyUnavailable("The revocation store is unavailable; retry shortly",
                                         detail=type(exc).__name__) from exc

    def _stored_denial(self, jti: str) -> bool:
        with self.db.session() as session:
            return stored_denial(session, jti)
