"""Last-use times of clients: noted in memory on the token path, written to the store in
batches by a background task, so issuing a token never writes to the database."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from sqlalchemy import Table, bindparam, or_, update
from sqlalchemy.orm import Session

from authserver.storage.models import Client


class UsageTracker:
    """Per-process record of the latest token time of each client since the last flush."""

    def __init__(self) -> None:
        self._pending: dict[str, float] = {}

    def touch(self, client_id: str, at: float) -> None:
        self._pending[client_id] = at

    def take(self) -> dict[str, float]:
        """Everything noted since the last call (the caller writes it, or gives it back)."""
        pending, self._pending = self._pending, {}
        return pending

    def give_back(self, pending: Mapping[str, float]) -> None:
        """A write failed: keep the times for the next flush (newer notes win)."""
        for client_id, at in pending.items():
            if self._pending.get(client_id, 0.0) < at:
                self._pending[client_id] = at


def record_last_used(session: Session, used: Mapping[str, float]) -> None:
    """Move `last_used_at` forward (never back: several instances flush independently)."""
    if not used:
        return
    table = cast(Table, Client.__table__)
    statement = (
        update(table)
        .where(table.c.client_id == bindparam("cid"))
        .where(or_(table.c.last_used_at.is_(None), table.c.last_used_at < bindparam("at")))
        .values(last_used_at=bindparam("at"))
    )
    session.connection().execute(
        statement, [{"cid": cid, "at": at} for cid, at in sorted(used.items())]
    )
