"""Changes to a person that must reach their tokens: disabling ends every token they hold
(a cutoff for all their clients, their refresh tokens and browser sessions)."""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.orm import Session

from authserver import audit, users
from authserver.errors import Invalid, NotFound
from authserver.people import refresh
from authserver.revocation import cut_off_subject
from authserver.storage.models import User, WebSession


def set_status(session: Session, user_id: str, status: str, now: float,
               actor: audit.Actor) -> users.UserRecord:
    """Disable or enable a person. Disabling cuts off every token issued to them; enabling
    does not bring those back."""
    if status not in ("active", "disabled"):
        raise Invalid("status: active or disabled")
    row = session.get(User, user_id, with_for_update=True)
    if row is None:
        raise NotFound(f"no user {user_id}")
    if row.status != status:
        row.status, row.updated_at = status, now
        if status == "disabled":
            end_tokens(session, row, now, "user.disabled")
        audit.record(session, actor, f"user.{'disable' if status == 'disabled' else 'enable'}",
                     user_id, now, org_id=row.org_id)
    return users.UserRecord.from_row(row)


def end_tokens(session: Session, row: User, now: float, reason: str) -> None:
    """Every access token of the person issued before now is dead; so are their refresh
    tokens and their browser sessions."""
    refresh.revoke_for(session, row.id, None, now)
    session.execute(delete(WebSession).where(WebSession.user_id == row.id))
    row.tokens_valid_after = cut_off_subject(session, row.id, None, now, reason, row.org_id)


def delete_user(session: Session, user_id: str, now: float,
                actor: audit.Actor) -> users.UserRecord:
    """Delete a person. Every token they hold is cut off first (as when disabled); their
    consents, authorization codes, refresh tokens and sessions go with the row (ON DELETE
    CASCADE). Returns the person as they were."""
    row = session.get(User, user_id, with_for_update=True)
    if row is None:
        raise NotFound(f"no user {user_id}")
    record = users.UserRecord.from_row(row)
    end_tokens(session, row, now, "user.deleted")
    session.delete(row)
    session.flush()
    audit.record(session, actor, "user.delete", user_id, now, org_id=record.org_id,
                 details={"username": record.username, "role": record.role})
    return record
