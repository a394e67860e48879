"""Initial access tokens (RFC 7591 §3): operator-issued Bearer tokens that let software
register, and decide which scopes the clients it registers may hold. Stored as digests."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, and_, or_, select, update
from sqlalchemy.orm import Session

from authserver import audit, hashing
from authserver.errors import Invalid, InvalidToken, NotFound
from authserver.scopes import ScopeCatalog
from authserver.storage.models import InitialAccessToken

ID_PREFIX = "iat_"


@dataclass(frozen=True, slots=True)
class AccessTokenView:
    id: str
    description: str
    scopes: tuple[str, ...]
    max_uses: int | None
    uses: int
    expires_at: float | None
    revoked_at: float | None
    created_at: float

    @classmethod
    def from_row(cls, row: InitialAccessToken) -> AccessTokenView:
        return cls(row.id, row.description, tuple(row.scopes), row.max_uses, row.uses,
                   row.expires_at, row.revoked_at, row.created_at)

    def state(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        if self.max_uses is not None and self.uses >= self.max_uses:
            return "used up"
        return "active"

    def public_dict(self, now: float) -> dict[str, Any]:
        return {"id": self.id, "description": self.description, "scope": " ".join(self.scopes),
                "max_uses": self.max_uses, "uses": self.uses, "expires_at": self.expires_at,
                "revoked_at": self.revoked_at, "created_at": self.created_at,
                "state": self.state(now)}


@dataclass(frozen=True, slots=True)
class NewAccessToken:
    view: AccessTokenView
    token: str = field(repr=False)


def create_access_token(
    session: Session, catalog: ScopeCatalog, now: float, *, scopes: Sequence[str] = (),
    max_uses: int | None = None, expires_in: float | None = None, description: str = "",
    actor: audit.Actor = audit.SYSTEM,
) -> NewAccessToken:
    """A new initial access token; its plaintext exists only in the returned value."""
    if max_uses is not None and max_uses < 1:
        raise Invalid("max_uses: must be at least 1")
    if expires_in is not None and expires_in <= 0:
        raise Invalid("expires_in: must be positive")
    if len(description) > 200:
        raise Invalid("description: at most 200 characters")
    checked = catalog.check_client_scopes(scopes)
    token = hashing.new_secret(hashing.INITIAL_ACCESS_TOKEN_PREFIX)
    row = InitialAccessToken(
        id=ID_PREFIX + secrets.token_hex(8), digest=hashing.digest(token),
        description=description, scopes=list(checked), max_uses=max_uses, uses=0,
        expires_at=None if expires_in is None else now + expires_in, revoked_at=None,
        created_at=now,
    )
    session.add(row)
    audit.record(session, actor, "registration_token.create", row.id, now,
                 details={"scopes": row.scopes, "max_uses": max_uses,
                          "expires_at": row.expires_at, "description": description})
    session.flush()
    return NewAccessToken(AccessTokenView.from_row(row), token)


def list_access_tokens(
    session: Session, *, after: tuple[float, str] | None = None, limit: int | None = None,
) -> list[AccessTokenView]:
    """Oldest first; `after` (created_at, id) and `limit` page through (keyset)."""
    query = select(InitialAccessToken).order_by(InitialAccessToken.created_at,
                                                InitialAccessToken.id)
    if after is not None:
        query = query.where(or_(InitialAccessToken.created_at > after[0],
                                and_(InitialAccessToken.created_at == after[0],
                                     InitialAccessToken.id > after[1])))
    if limit is not None:
        query = query.limit(limit)
    return [AccessTokenView.from_row(row) for row in session.scalars(query)]


def revoke_access_token(
    session: Session, token_id: str, now: float, actor: audit.Actor = audit.SYSTEM,
) -> AccessTokenView:
    """Stops the token registering more clients; a repeat is a no-op. Clients it registered
    stay (delete them one by one if they must go)."""
    row = session.get(InitialAccessToken, token_id)
    if row is None:
        raise NotFound(f"no initial access token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = now
        audit.record(session, actor, "registration_token.revoke", token_id, now)
    return AccessTokenView.from_row(row)


def find_access_token(session: Session, token: str, now: float) -> InitialAccessToken:
    """The live token row for a presented token (expired or revoked ones are refused)."""
    row = session.scalars(
        select(InitialAccessToken).where(InitialAccessToken.digest == hashing.digest(token))
    ).first()
    if row is None or row.revoked_at is not None or (
        row.expires_at is not None and row.expires_at <= now
    ):
        raise InvalidToken("The initial access token is invalid, expired or revoked")
    return row


def consume_access_token(session: Session, token_id: str, now: float) -> None:
    """Count one use, atomically: two registrations racing for the last use cannot both win,
    and a revocation or expiry committed since the token was looked up still counts."""
    table = cast(Table, InitialAccessToken.__table__)
    result = session.connection().execute(
        update(table)
        .where(table.c.id == token_id, table.c.revoked_at.is_(None))
        .where(or_(table.c.expires_at.is_(None), table.c.expires_at > now))
        .where(or_(table.c.max_uses.is_(None), table.c.uses < table.c.max_uses))
        .values(uses=table.c.uses + 1)
    )
    if result.rowcount != 1:
        raise InvalidToken("The initial access token has no uses left, expired or was revoked")
