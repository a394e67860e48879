"""The revocation feed: events of the log as RFC 8417 Security Event Tokens, delivered by RFC 8936
poll with acknowledgements, per receiver (docs/resource-servers.md).

A SET's `jti` is the event id. A receiver's state is a cursor (every deliverable event at or
below it is acknowledged) plus the acknowledged ids above it. The cursor only passes events older
than the event log's rescan margin, so an event committed late (a lower id than one already
seen, on PostgreSQL) is still delivered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, delete, func, select
from sqlalchemy.orm import Session

from authserver.keyring import SigningKey
from authserver.storage.db import insert_if_absent
from authserver.storage.models import Event, SetReceiver

SET_TYP = "secevent+jwt"
CUTOFF_EVENT = "urn:authserver:secevent:client-cutoff"
REVOKED_EVENT = "urn:authserver:secevent:token-revoked"
SUBJECT_CUTOFF_EVENT = "urn:authserver:secevent:subject-cutoff"
# Event log types that change what a resource server must accept.
DELIVERED = ("client.updated", "client.disabled", "client.deleted", "token.revoked",
             "subject.cutoff")


@dataclass(frozen=True, slots=True)
class PollRequest:
    """RFC 8936 §2.4 poll request members."""

    ack: tuple[str, ...] = ()
    errors: Mapping[str, Any] = field(default_factory=dict)
    max_events: int | None = None
    return_immediately: bool = False
    # Extension: a name per receiving process, so each keeps its own position (a restarted or
    # second worker of a resource server starts from the history, not after the others' acks).
    receiver: str = "default"


@dataclass(frozen=True, slots=True)
class Batch:
    events: tuple[Event, ...]
    more_available: bool


def set_claims(event: Event, issuer: str, audience: str) -> dict[str, Any]:
    """RFC 8417 §2.2 claims of the SET for one event."""
    data = event.data
    if event.type == "token.revoked":
        payload = {REVOKED_EVENT: {"jti": data["jti"], "client_id": data["client_id"],
                                   "exp": data["exp"]}}
    elif event.type == "subject.cutoff":
        payload = {SUBJECT_CUTOFF_EVENT: {
            "sub": data["user_id"], "client_id": data.get("client_id"),
            "tokens_valid_after": data["tokens_valid_after"], "reason": data.get("reason")}}
    else:
        payload = {CUTOFF_EVENT: {"client_id": event.subject,
                                  "tokens_valid_after": data.get("tokens_valid_after", 0.0),
                                  "reason": event.type}}
    return {"iss": issuer, "iat": int(event.created_at), "jti": str(event.id), "aud": audience,
            "sub_id": {"format": "opaque", "id": event.subject}, "events": payload}


def sign_set(signer: SigningKey, event: Event, issuer: str, audience: str) -> str:
    return signer.sign(set_claims(event, issuer, audience), SET_TYP)


def _upsert_receiver(session: Session, receiver_id: str, client_id: str, start: int,
                     now: float) -> None:
    """Create the receiver's row unless it exists (two instances may race for it)."""
    values = {"id": receiver_id, "client_id": client_id, "cursor": start, "sent_through": start,
              "acked": [], "created_at": now, "polled_at": now}
    insert_if_absent(session, cast(Table, SetReceiver.__table__), values, "id")


def _receiver(
    session: Session, receiver_id: str, client_id: str, now: float, history: float
) -> SetReceiver:
    """The receiver's state, locked for this transaction; a new receiver starts with the events
    that can still matter (those newer than the longest token lifetime)."""
    receiver = session.get(SetReceiver, receiver_id, with_for_update=True)
    if receiver is None:
        start = session.scalar(select(func.max(Event.id)).where(Event.created_at < now - history))
        _upsert_receiver(session, receiver_id, client_id, start or 0, now)
        receiver = session.get(SetReceiver, receiver_id, with_for_update=True,
                               populate_existing=True)
        assert receiver is not None
    return receiver


def poll(
    session: Session, receiver_id: str, client_id: str, request: PollRequest, now: float, *,
    history: float, settle: float, default_max: int, limit: int,
) -> Batch:
    """Apply the acknowledgements, then return the unacknowledged events (RFC 8936 §2.4).

    `history`: how far back a new receiver starts, and how old an event must be before it can no
    longer matter; `settle`: how old an acknowledged event must be before the cursor passes it;
    `limit`: the most events one response carries."""
    receiver = _receiver(session, receiver_id, client_id, now, history)
    acked = set(receiver.acked)
    for jti in (*request.ack, *request.errors):  # an error report also ends redelivery
        if jti.isascii() and jti.isdigit() and len(jti) <= 18:  # our jtis are event ids
            number = int(jti)
            if receiver.cursor < number <= receiver.sent_through:  # only what was sent
                acked.add(number)
    wanted = min(limit, default_max if request.max_events is None else request.max_events)
    rows: Sequence[Event] = session.scalars(
        select(Event).where(Event.id > receiver.cursor, Event.type.in_(DELIVERED))
        .order_by(Event.id).limit(wanted + len(acked) + 1)
    ).all()
    cursor = receiver.cursor
    for row in rows:
        done = row.id in acked and row.created_at < now - settle
        # An event older than any live token can no longer matter, acknowledged or not.
        if not (done or row.created_at < now - history):
            break
        cursor = row.id
    unacked = [row for row in rows if row.id > cursor and row.id not in acked]
    sent = unacked[:wanted]
    receiver.cursor = cursor
    receiver.acked = sorted(i for i in acked if i > cursor)
    receiver.sent_through = max([receiver.sent_through, cursor, *(r.id for r in sent)])
    receiver.polled_at = now
    return Batch(tuple(sent), len(unacked) > len(sent))


def purge_receivers(session: Session, idle_since: float) -> int:
    """Drop receivers that have not polled since `idle_since` (a resource-server process that
    is gone). One that comes back starts again from the history: nothing that matters is lost,
    at worst a few SETs are delivered twice."""
    result = session.execute(delete(SetReceiver).where(SetReceiver.polled_at < idle_since))
    return int(result.rowcount)  # type: ignore[attr-defined]


def has_pending(session: Session, receiver_id: str) -> bool:
    """Whether a poll would return anything now (for long polling)."""
    receiver = session.get(SetReceiver, receiver_id)
    if receiver is None:
        return True
    acked = set(receiver.acked)
    rows = session.scalars(
        select(Event.id).where(Event.id > receiver.cursor, Event.type.in_(DELIVERED))
        .order_by(Event.id).limit(len(acked) + 1)
    ).all()
    return any(i not in acked for i in rows)
