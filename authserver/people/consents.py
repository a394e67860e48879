"""A person's consents: which scopes they allowed a client, remembered until revoked (or
until `authorization.consent_lifetime` passes). Revoking a consent ends the person's tokens
for that client at once (a cutoff, delivered like a client's) and their refresh tokens."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver import audit
from authserver.people import refresh
from authserver.revocation import cut_off_subject
from authserver.storage.models import Consent


@dataclass(frozen=True, slots=True)
class ConsentView:
    client_id: str
    scopes: tuple[str, ...]
    granted_at: float
    expires_at: float | None


def remembered(session: Session, user_id: str, client_id: str, now: float) -> frozenset[str]:
    """The scopes a live consent of this person covers for this client (empty: none)."""
    row = session.get(Consent, (user_id, client_id))
    if row is None or row.revoked_at is not None or (
            row.expires_at is not None and row.expires_at <= now):
        return frozenset()
    return frozenset(row.scopes)


def grant(session: Session, user_id: str, client_id: str, scopes: tuple[str, ...], now: float,
          lifetime: float, actor: audit.Actor) -> None:
    """Remember the person's consent to these scopes (added to what they allowed before)."""
    row = session.get(Consent, (user_id, client_id), with_for_update=True)
    expires = now + lifetime if lifetime else None
    if row is None:
        session.add(Consent(user_id=user_id, client_id=client_id, scopes=sorted(set(scopes)),
                            granted_at=now, expires_at=expires, tokens_valid_after=0.0))
    else:
        live = row.revoked_at is None and (row.expires_at is None or row.expires_at > now)
        before = set(row.scopes) if live else set()
        row.scopes = sorted(before | set(scopes))
        row.granted_at, row.expires_at, row.revoked_at = now, expires, None
    audit.record(session, actor, "consent.grant", client_id, now,
                 details={"user_id": user_id, "scopes": sorted(set(scopes))})


def list_for(session: Session, user_id: str, now: float) -> list[ConsentView]:
    rows = session.scalars(select(Consent).where(
        Consent.user_id == user_id, Consent.revoked_at.is_(None)).order_by(Consent.granted_at))
    return [ConsentView(r.client_id, tuple(r.scopes), r.granted_at, r.expires_at) for r in rows
            if r.expires_at is None or r.expires_at > now]


def revoke(session: Session, user_id: str, client_id: str, now: float,
           actor: audit.Actor) -> bool:
    """End the consent and every token the person holds for the client; False when there was
    no live consent (the tokens are cut off all the same)."""
    row = session.get(Consent, (user_id, client_id), with_for_update=True)
    was_live = row is not None and row.revoked_at is None
    if row is None:
        row = Consent(user_id=user_id, client_id=client_id, scopes=[], granted_at=now)
        session.add(row)
    row.scopes, row.revoked_at = [], now
    refresh.revoke_for(session, user_id, client_id, now)
    row.tokens_valid_after = cut_off_subject(session, user_id, client_id, now,
                                             "consent.revoked")
    audit.record(session, actor, "consent.revoke", client_id, now,
                 details={"user_id": user_id})
    return was_live
