"""The audit log: who did what to what, with which outcome. Never a secret.

Writers call `record` inside the transaction of the change, so a change and its entry commit or
fail together. Authentication failures are recorded in a transaction of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


def record(
    session: Session, actor: Actor, action: str, target: str, at: float, *,
    org_id: str | None = None, outcome: str = "success", details: dict[str, Any] | None = None,
) -> None:
    session.add(AuditEntry(at=at, actor=actor.name, action=action, target=target, org_id=org_id,
                           outcome=outcome, source=actor.source, request_id=actor.request_id,
                           details=details or {}))
