"""Reaping self-registered clients nobody uses (docs/registration.md, "Reaping").

A self-registered client is reaped when it never fetched a token within
`registration.reap_unused_after` of registering, or its last token is older than
`registration.reap_idle_after`. Clients made by an operator are never reaped.
"""

from __future__ import annotations

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from authserver import audit, events
from authserver.clients.admin import cutoff
from authserver.config import RegistrationSettings
from authserver.storage.models import Client


def _stale(
    settings: RegistrationSettings, now: float, margin: float
) -> ColumnElement[bool] | None:
    """`margin` (the last-use flush interval) covers a use another instance has not yet
    written: it is in the store by the time the client is that much older."""
    rules = []
    if settings.reap_unused_after > 0:
        rules.append(and_(Client.last_used_at.is_(None),
                          Client.created_at < now - settings.reap_unused_after - margin))
    if settings.reap_idle_after > 0:
        rules.append(Client.last_used_at < now - settings.reap_idle_after - margin)
    return and_(Client.origin == "dcr", or_(*rules)) if rules else None


def stale_clients(
    session: Session, settings: RegistrationSettings, now: float, margin: float,
    limit: int = 1000,
) -> list[tuple[str, str]]:
    """(client_id, org_id) of clients the reaping rule selects, oldest first."""
    rule = _stale(settings, now, margin)
    if rule is None:
        return []
    query = select(Client.client_id, Client.org_id).where(rule).order_by(
        Client.created_at).limit(limit)
    return [(cid, org) for cid, org in session.execute(query)]


def reap(
    session: Session, settings: RegistrationSettings, now: float, margin: float,
    limit: int = 1000,
) -> int:
    """Delete stale self-registered clients (each with its `client.deleted` event); returns how
    many. Each delete re-checks the rule, so a client used meanwhile, or reaped by another
    instance, is left alone."""
    rule = _stale(settings, now, margin)
    if rule is None:
        return 0
    count = 0
    for client_id, org_id in stale_clients(session, settings, now, margin, limit):
        result = session.execute(delete(Client).where(Client.client_id == client_id, rule))
        if result.rowcount == 1:  # type: ignore[attr-defined]
            events.record(session, "client.deleted", client_id, now, org_id,
                          {"tokens_valid_after": cutoff(now), "reason": "reaped"})
            audit.record(session, audit.SYSTEM, "client.reap", client_id, now, org_id=org_id)
            count += 1
    return count
