"""Usage per API key (or OAuth client) and organisation: requests counted by kind (read/write)
and credits, per UTC day. Counted in memory on the request path and added to the store in
batches by a background task, so a request never writes to the database."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from authserver.storage.db import upsert_adding
from authserver.storage.models import ApiKey, UsageCounter

Slot = tuple[str, str, str]  # subject, org_id, day


def day_of(at: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at))


class UsageCounters:
    """Per-process counts since the last flush."""

    def __init__(self, read_credits: int, write_credits: int) -> None:
        self.read_credits = read_credits
        self.write_credits = write_credits
        self._pending: defaultdict[Slot, list[int]] = defaultdict(lambda: [0, 0, 0])
        self._keys_used: dict[str, float] = {}

    def count(self, subject: str, org_id: str, action: str, at: float,
              api_key: bool = False) -> None:
        """One request; `read` is a read, every other action a write."""
        if api_key:
            self._keys_used[subject] = at
        slot = self._pending[(subject, org_id, day_of(at))]
        if action == "read":
            slot[0] += 1
            slot[2] += self.read_credits
        else:
            slot[1] += 1
            slot[2] += self.write_credits

    def take(self) -> tuple[dict[Slot, list[int]], dict[str, float]]:
        pending, self._pending = self._pending, defaultdict(lambda: [0, 0, 0])
        used, self._keys_used = self._keys_used, {}
        return dict(pending), used

    def give_back(self, pending: Mapping[Slot, list[int]], used: Mapping[str, float]) -> None:
        """A write failed: keep the counts for the next flush."""
        for key_id, at in used.items():
            self._keys_used[key_id] = max(at, self._keys_used.get(key_id, 0.0))
        for slot, (reads, writes, credits) in pending.items():
            mine = self._pending[slot]
            mine[0] += reads
            mine[1] += writes
            mine[2] += credits


def record_usage(
    session: Session, pending: Mapping[Slot, list[int]], keys_used: Mapping[str, float]
) -> None:
    """Add the counts; move API keys' `last_used_at` forward (never back)."""
    if keys_used:
        table = cast(Table, ApiKey.__table__)
        session.connection().execute(
            update(table).where(table.c.id == bindparam("kid"))
            .where(or_(table.c.last_used_at.is_(None), table.c.last_used_at < bindparam("at")))
            .values(last_used_at=bindparam("at")),
            [{"kid": k, "at": at} for k, at in sorted(keys_used.items())])
    rows = [{"subject": subject, "org_id": org_id, "day": day, "reads": reads,
             "writes": writes, "credits": credits}
            for (subject, org_id, day), (reads, writes, credits) in sorted(pending.items())]
    upsert_adding(session, cast(Table, UsageCounter.__table__), rows, ("subject", "day"),
                  ("reads", "writes", "credits"))


@dataclass(frozen=True, slots=True)
class UsageRow:
    subject: str
    org_id: str
    day: str
    reads: int
    writes: int
    credits: int

    def as_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "org_id": self.org_id, "day": self.day,
                "reads": self.reads, "writes": self.writes, "credits": self.credits}


def usage_report(
    session: Session, *, org_id: str | None = None, subject: str | None = None,
    since: str | None = None, until: str | None = None,
    after: tuple[str, str] | None = None, limit: int | None = None,
) -> tuple[list[UsageRow], dict[str, dict[str, int]]]:
    """Rows per subject and day (newest day first), and totals per organisation (over every
    row the filters select, whatever the page). `after` (day, subject) and `limit` page."""
    conditions: list[ColumnElement[bool]] = []
    if org_id is not None:
        conditions.append(UsageCounter.org_id == org_id)
    if subject is not None:
        conditions.append(UsageCounter.subject == subject)
    if since is not None:
        conditions.append(UsageCounter.day >= since)
    if until is not None:
        conditions.append(UsageCounter.day <= until)
    query = select(UsageCounter).where(*conditions)
    if after is not None:
        query = query.where(or_(UsageCounter.day < after[0],
                                and_(UsageCounter.day == after[0],
                                     UsageCounter.subject > after[1])))
    query = query.order_by(UsageCounter.day.desc(), UsageCounter.subject)
    if limit is not None:
        query = query.limit(limit)
    rows = [UsageRow(r.subject, r.org_id, r.day, r.reads, r.writes, r.credits)
            for r in session.scalars(query)]
    totals_query = select(UsageCounter.org_id, func.sum(UsageCounter.reads),
                          func.sum(UsageCounter.writes), func.sum(UsageCounter.credits)
                          ).where(*conditions).group_by(UsageCounter.org_id)
    totals = {org: {"reads": int(r or 0), "writes": int(w or 0), "credits": int(c or 0)}
              for org, r, w, c in session.execute(totals_query)}
    return rows, totals
