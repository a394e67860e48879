"""Organisations: the owners of clients, API keys and their usage.

Disabling one stops its clients (a cutoff on each, delivered like any client change) and its API
keys (their cache entries carry the organisation's state and are dropped on the event).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from authserver import audit, events
from authserver.clients import cutoff
from authserver.errors import Conflict, Invalid, NotFound
from authserver.storage.models import DEFAULT_ORG_ID, ApiKey, Client, Organization, User

ORG_ID_PREFIX = "org_"
MAX_NAME = 200


@dataclass(frozen=True, slots=True)
class OrgRecord:
    id: str
    name: str
    status: str
    created_at: float

    @property
    def active(self) -> bool:
        return self.status == "active"

    def public_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "status": self.status,
                "created_at": self.created_at}

    @classmethod
    def from_row(cls, row: Organization) -> OrgRecord:
        return cls(row.id, row.name, row.status, row.created_at)


def _name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise Invalid(f"name: 1 to {MAX_NAME} printable characters")
    return name


def org_row(session: Session, org_id: str) -> Organization:
    row = session.get(Organization, org_id)
    if row is None:
        raise NotFound(f"no organisation {org_id}")
    return row


def create_org(session: Session, name: str, now: float, actor: audit.Actor) -> OrgRecord:
    row = Organization(id=ORG_ID_PREFIX + secrets.token_hex(8), name=_name(name),
                       status="active", created_at=now)
    session.add(row)
    events.record(session, "organization.created", row.id, now, row.id)
    audit.record(session, actor, "organization.create", row.id, now, org_id=row.id,
                 details={"name": row.name})
    return OrgRecord.from_row(row)


def get_org(session: Session, org_id: str) -> OrgRecord:
    return OrgRecord.from_row(org_row(session, org_id))


def list_orgs(
    session: Session, org_id: str | None = None, *, after: tuple[float, str] | None = None,
    limit: int | None = None,
) -> list[OrgRecord]:
    """Oldest first; `org_id` keeps that one only; `after` (created_at, id) and `limit` page
    through (keyset)."""
    query = select(Organization).order_by(Organization.created_at, Organization.id)
    if org_id is not None:
        query = query.where(Organization.id == org_id)
    if after is not None:
        query = query.where(or_(Organization.created_at > after[0],
                                (Organization.created_at == after[0])
                                & (Organization.id > after[1])))
    if limit is not None:
        query = query.limit(limit)
    return [OrgRecord.from_row(r) for r in session.scalars(query)]


def rename_org(
    session: Session, org_id: str, name: str, now: float, actor: audit.Actor
) -> OrgRecord:
    row = org_row(session, org_id)
    row.name = _name(name)
    events.record(session, "organization.updated", org_id, now, org_id)
    audit.record(session, actor, "organization.rename", org_id, now, org_id=org_id,
                 details={"name": row.name})
    return OrgRecord.from_row(row)


def set_org_disabled(
    session: Session, org_id: str, disabled: bool, now: float, actor: audit.Actor
) -> OrgRecord:
    """Disable (cutting off every token of its clients) or re-enable; a repeat is a no-op."""
    row = org_row(session, org_id)
    status = "disabled" if disabled else "active"
    if row.status == status:
        return OrgRecord.from_row(row)
    row.status = status
    if disabled:
        after = cutoff(now)
        for client in session.scalars(select(Client).where(Client.org_id == org_id)):
            client.tokens_valid_after = max(client.tokens_valid_after, after)
            events.record(session, "client.cut_off", client.client_id, now, org_id,
                          {"tokens_valid_after": client.tokens_valid_after,
                           "reason": "organization.disabled"})
    events.record(session, "organization.disabled" if disabled else "organization.enabled",
                  org_id, now, org_id)
    audit.record(session, actor, "organization.disable" if disabled else "organization.enable",
                 org_id, now, org_id=org_id)
    return OrgRecord.from_row(row)


def check_deletable(session: Session, org_id: str, now: float) -> Organization:
    """The organisation, if it may be deleted now: not the operator's, and owning no client,
    no live API key and no person (Conflict naming what is left otherwise)."""
    if org_id == DEFAULT_ORG_ID:
        raise Conflict("the operator organisation cannot be deleted")
    row = org_row(session, org_id)
    clients = session.scalar(select(func.count()).select_from(Client)
                             .where(Client.org_id == org_id)) or 0
    keys = session.scalar(select(func.count()).select_from(ApiKey).where(
        ApiKey.org_id == org_id, ApiKey.status == "active",
        or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now))) or 0
    people = session.scalar(select(func.count()).select_from(User)
                            .where(User.org_id == org_id)) or 0
    left = [f"{n} {what}" for n, what in ((clients, "client(s)"), (keys, "live API key(s)"),
                                          (people, "user(s)")) if n]
    if left:
        raise Conflict(f"organisation {org_id} still has {', '.join(left)}; delete or revoke "
                       "them first")
    return row


def delete_org(session: Session, org_id: str, now: float, actor: audit.Actor) -> OrgRecord:
    """Delete an empty organisation (`check_deletable`); its revoked and expired API keys go
    with it, its usage counts and audit entries stay."""
    row = session.get(Organization, org_id, with_for_update=True, populate_existing=True)
    if row is None:
        raise NotFound(f"no organisation {org_id}")
    row = check_deletable(session, org_id, now)
    record = OrgRecord.from_row(row)
    session.execute(delete(ApiKey).where(ApiKey.org_id == org_id))
    session.delete(row)
    events.record(session, "organization.deleted", org_id, now, org_id)
    audit.record(session, actor, "organization.delete", org_id, now, org_id=org_id,
                 details={"name": record.name})
    session.flush()
    return record
