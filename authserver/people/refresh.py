"""Refresh tokens (RFC 6749 §6, OAuth 2.1 §4.3): opaque, stored as SHA-256, bound to the client
and the resources of the first grant. Public clients' tokens rotate on every use; a rotated
token used again revokes its whole family, with the access tokens it issued.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from authserver import audit, hashing
from authserver.revocation import deny_token
from authserver.storage.models import RefreshToken

REFRESH_PREFIX = "rt_"


@dataclass(frozen=True, slots=True)
class RefreshGrant:
    id: str = field(repr=False)
    family_id: str
    client_id: str
    user_id: str
    scopes: tuple[str, ...]
    resources: tuple[str, ...]
    auth_time: float
    expires_at: float


Use = RefreshGrant | Literal["reused", "unknown"]


def issue_refresh_token(
    session: Session, *, family_id: str | None, client_id: str, user_id: str,
    scopes: tuple[str, ...], resources: tuple[str, ...], auth_time: float, now: float,
    expires_at: float, access_jti: str, access_exp: float,
) -> tuple[str, str]:
    """A new refresh token: (its value, its family id)."""
    token = REFRESH_PREFIX + secrets.token_urlsafe(32)
    family = family_id or secrets.token_hex(16)
    session.add(RefreshToken(
        id=hashing.digest(token), family_id=family, client_id=client_id, user_id=user_id,
        scopes=list(scopes), resources=list(resources), auth_time=auth_time, created_at=now,
        expires_at=expires_at, access_jti=access_jti, access_exp=access_exp))
    return token, family


def use_refresh_token(session: Session, token: str, client_id: str, now: float,
                      rotate: bool) -> Use:
    """The grant behind a live refresh token of this client. With `rotate` the token is used
    up (a conditional UPDATE, so of two concurrent uses one is a reuse). A rotated token seen
    again is "reused"; anything else that is not live is "unknown"."""
    if not token.startswith(REFRESH_PREFIX) or len(token) > 100:
        return "unknown"
    digest = hashing.digest(token)
    row = session.get(RefreshToken, digest)
    if row is None or row.client_id != client_id:
        return "unknown"
    if row.revoked_at is not None:
        return "unknown"
    if row.used_at is not None:
        return "reused"
    if row.expires_at <= now:
        return "unknown"
    if rotate:
        result = session.execute(update(RefreshToken).where(
            RefreshToken.id == digest, RefreshToken.used_at.is_(None)).values(used_at=now))
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return "reused"
    return RefreshGrant(digest, row.family_id, row.client_id, row.user_id, tuple(row.scopes),
                        tuple(row.resources), row.auth_time, row.expires_at)


def family_of(session: Session, token: str) -> tuple[str, str] | None:
    """(family id, client id) of a refresh token, whatever its state."""
    if not token.startswith(REFRESH_PREFIX) or len(token) > 100:
        return None
    row = session.get(RefreshToken, hashing.digest(token))
    return None if row is None else (row.family_id, row.client_id)


def record_access(session: Session, refresh_id: str, access_jti: str, access_exp: float) -> None:
    """The access token last issued with a (non-rotating) refresh token."""
    session.execute(update(RefreshToken).where(RefreshToken.id == refresh_id).values(
        access_jti=access_jti, access_exp=access_exp))


def revoke_family(session: Session, family_id: str, now: float, actor: audit.Actor,
                  reason: str) -> list[tuple[str, float]]:
    """Revoke every refresh token of the family and deny the access tokens they issued that
    are still live. Returns those tokens' (jti, exp)."""
    rows = session.scalars(select(RefreshToken).where(RefreshToken.family_id == family_id)
                           .with_for_update()).all()
    denied: list[tuple[str, float]] = []
    for row in rows:
        if row.revoked_at is None:
            row.revoked_at = now
        if row.access_jti and row.access_exp and row.access_exp > now:
            deny_token(session, row.access_jti, row.client_id, row.access_exp, now, actor)
            denied.append((row.access_jti, row.access_exp))
    if rows:
        audit.record(session, actor, "refresh_token.revoke_family", family_id, now,
                     details={"client_id": rows[0].client_id, "user_id": rows[0].user_id,
                              "reason": reason})
    return denied


def revoke_for(session: Session, user_id: str, client_id: str | None, now: float) -> int:
    """Revoke the person's refresh tokens (for one client, or all); their access tokens are
    ended by the person's cutoff, not one by one."""
    query = update(RefreshToken).where(RefreshToken.user_id == user_id,
                                       RefreshToken.revoked_at.is_(None))
    if client_id is not None:
        query = query.where(RefreshToken.client_id == client_id)
    result = session.execute(query.values(revoked_at=now))
    return int(result.rowcount)  # type: ignore[attr-defined]


def purge_refresh_tokens(session: Session, before: float) -> int:
    result = session.execute(delete(RefreshToken).where(RefreshToken.expires_at < before))
    return int(result.rowcount)  # type: ignore[attr-defined]
