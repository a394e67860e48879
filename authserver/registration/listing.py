"""What operators see of self-registered clients: software, origin and last use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.clients.records import ClientRecord
from authserver.storage.models import Client, ClientRegistration


@dataclass(frozen=True, slots=True)
class RegisteredClient:
    client: ClientRecord
    via: str
    initial_access_token_id: str | None
    source_address: str | None
    software_id: str | None
    software_version: str | None

    @property
    def origin(self) -> str:
        """Where it came from: the initial access token, or open registration's address."""
        if self.initial_access_token_id:
            return self.initial_access_token_id
        return f"open from {self.source_address or 'unknown address'}"

    @property
    def software(self) -> str:
        name = self.software_id or "-"
        return f"{name} {self.software_version}" if self.software_version else name

    def public_dict(self) -> dict[str, Any]:
        return {**self.client.public_dict(), "registered_via": self.via,
                "initial_access_token_id": self.initial_access_token_id,
                "source_address": self.source_address, "software_id": self.software_id,
                "software_version": self.software_version}


def list_registered(session: Session, org_id: str | None = None) -> list[RegisteredClient]:
    """Oldest first; `org_id` keeps one organisation's."""
    query = (select(Client, ClientRegistration)
             .join(ClientRegistration, ClientRegistration.client_id == Client.client_id)
             .order_by(Client.created_at, Client.client_id))
    if org_id is not None:
        query = query.where(Client.org_id == org_id)
    rows = session.execute(query)
    return [RegisteredClient(ClientRecord.from_row(c), r.via, r.initial_access_token_id,
                             r.source_address, r.software_id, r.software_version)
            for c, r in rows]
