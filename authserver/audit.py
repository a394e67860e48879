"""The audit log: who did what to what, with which outcome. Never a secret.

Writers call `record` inside the transaction of the change, so a change and its entry commit or
fail together. Authentication failures are recorded in a transaction of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, delete, insert, select
from sqlalchemy.orm import Session

from authserver.storage.models import AuditEntry


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: `cli` or `cli:<login>`, `api_key:<id>`, `client:<id>`, `user:<id>`,
    `anonymous`; where from; under which request id."""

    name: str
    source: str | None = None
    request_id: str | None = None
    org_id: str | None = field(default=None, compare=False)


CLI = Actor("cli")
# A change made by the server itself (the reaper), or by a caller that names no actor.
SYSTEM = Actor("system")


def record(
    session: Session, actor: Actor, action: str, target: str, at: float, *,
    org_id: str | None = None, outcome: str = "success", details: dict[str, Any] | None = None,
) -> None:
    session.add(AuditEntry(at=at, actor=actor.name, action=action, target=target, org_id=org_id,
                           outcome=outcome, source=actor.source, request_id=actor.request_id,
                           details=details or {}))


@dataclass(frozen=True, slots=True)
class AuditView:
    id: int
    at: float
    actor: str
    action: str
    target: str
    org_id: str | None
    outcome: str
    source: str | None
    request_id: str | None
    details: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at, "actor": self.actor, "action": self.action,
                "target": self.target, "org_id": self.org_id, "outcome": self.outcome,
                "source": self.source, "request_id": self.request_id, "details": self.details}


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters (exact match; `action` also as a prefix ending in `.`, e.g. `client.`), a time
    range, and the cursor: entries older than `before_id`."""

    actor: str | None = None
    action: str | None = None
    target: str | None = None
    org_id: str | None = None
    outcome: str | None = None
    since: float | None = None
    until: float | None = None
    before_id: int | None = None
    limit: int = 100


def read(session: Session, query: AuditQuery) -> list[AuditView]:
    """Newest first, at most `query.limit` entries."""
    conditions: list[ColumnElement[bool]] = []
    if query.actor is not None:
        conditions.append(AuditEntry.actor == query.actor)
    if query.action is not None:
        conditions.append(AuditEntry.action.startswith(query.action, autoescape=True)
                          if query.action.endswith(".") else AuditEntry.action == query.action)
    if query.target is not None:
        conditions.append(AuditEntry.target == query.target)
    if query.org_id is not None:
        conditions.append(AuditEntry.org_id == query.org_id)
    if query.outcome is not None:
        conditions.append(AuditEntry.outcome == query.outcome)
    if query.since is not None:
        conditions.append(AuditEntry.at >= query.since)
    if query.until is not None:
        conditions.append(AuditEntry.at <= query.until)
    if query.before_id is not None:
        conditions.append(AuditEntry.id < query.before_id)
    rows = session.scalars(select(AuditEntry).where(*conditions)
                           .order_by(AuditEntry.id.desc()).limit(query.limit))
    return [AuditView(r.id, r.at, r.actor, r.action, r.target, r.org_id, r.outcome, r.source,
                      r.request_id, dict(r.details)) for r in rows]


def purge(session: Session, older_than: float) -> int:
    """Drop entries past the retention period."""
    result = session.execute(delete(AuditEntry).where(AuditEntry.at < older_than))
    return int(result.rowcount)  # type: ignore[attr-defined]


class FailureLog:
    """Authentication failures, kept in memory and written in batches: one database write per
    failed request would let anyone with a bad password load the store. Bounded: past
    `max_pending` entries, further ones are counted and reported as one entry."""

    def __init__(self, max_pending: int = 10_000) -> None:
        self.max_pending = max_pending
        self._pending: list[dict[str, Any]] = []
        self._dropped = 0

    def note(self, action: str, target: str, at: float, source: str | None,
             reason: str, org_id: str | None = None) -> None:
        if len(self._pending) >= self.max_pending:
            self._dropped += 1
            return
        self._pending.append({
            "at": at, "actor": "anonymous", "action": action, "target": target[:200],
            "org_id": org_id, "outcome": "failure", "source": source, "request_id": None,
            "details": {"reason": reason}})

    def take(self, now: float) -> list[dict[str, Any]]:
        """Everything noted since the last call (written by `write`, or given back)."""
        pending, self._pending = self._pending, []
        dropped, self._dropped = self._dropped, 0
        if dropped:
            pending.append({"at": now, "actor": "system", "action": "audit.overflow",
                            "target": "auth-failures", "org_id": None, "outcome": "failure",
                            "source": None, "request_id": None,
                            "details": {"dropped": dropped}})
        return pending

    def give_back(self, entries: list[dict[str, Any]]) -> None:
        """A write failed: keep the entries (within the bound) for the next flush."""
        room = max(0, self.max_pending - len(self._pending))
        self._pending = entries[:room] + self._pending
        self._dropped += max(0, len(entries) - room)


def write_entries(session: Session, entries: list[dict[str, Any]]) -> None:
    if entries:
        session.execute(insert(AuditEntry), entries)
