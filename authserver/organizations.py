"""Organisations: the owners of clients, API keys and their usage.

Disabling one stops its clients (a cutoff on each, delivered like any client change) and its API
keys (their cache entries carry the organisation's state and are dropped on the event).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver import audit, events
from authserver.clients import cutoff
from authserver.errors import Invalid, NotFound
from authserver.storage.models import Client, Organization

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


def list_orgs(session: Session) -> list[OrgRecord]:
    rows = session.scalars(select(Organization).order_by(Organization.created_at,
                                                         Organization.id))
    return [OrgRecord.from_row(r) for r in rows]


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
