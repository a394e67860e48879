"""The immutable view of an API key that requests are checked against."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from authserver.clients.records import IPNetwork, address_allowed
from authserver.storage.models import ApiKey


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: str
    org_id: str
    name: str
    environment: str
    permissions: tuple[str, ...]
    ip_allow: tuple[IPNetwork, ...]
    expires_at: float | None
    rate_limits: dict[str, str]
    status: str
    created_by: str
    created_at: float
    updated_at: float
    revoked_at: float | None = None
    replaced_by: str | None = None
    last_used_at: float | None = None
    digest: str = field(default="", repr=False)
    # False while the key's organisation is disabled (read with the key).
    org_active: bool = True

    def state(self, now: float) -> str:
        """active, revoked or expired."""
        if self.status != "active":
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def ip_allowed(self, address: str | None) -> bool:
        return address_allowed(self.ip_allow, address)

    @classmethod
    def from_row(cls, row: ApiKey, org_active: bool = True) -> ApiKeyRecord:
        return cls(
            id=row.id, org_id=row.org_id, name=row.name, environment=row.environment,
            permissions=tuple(row.permissions),
            ip_allow=tuple(ipaddress.ip_network(c, strict=False) for c in row.ip_allow),
            expires_at=row.expires_at, rate_limits=dict(row.rate_limits), status=row.status,
            created_by=row.created_by, created_at=row.created_at, updated_at=row.updated_at,
            revoked_at=row.revoked_at, replaced_by=row.replaced_by,
            last_used_at=row.last_used_at, digest=row.digest, org_active=org_active,
        )

    def public_dict(self, now: float) -> dict[str, Any]:
        """What an operator (or the key itself) may see; never the key or its digest."""
        return {
            "id": self.id, "org_id": self.org_id, "name": self.name,
            "environment": self.environment, "permissions": list(self.permissions),
            "ip_allowlist": [str(n) for n in self.ip_allow], "expires_at": self.expires_at,
            "rate_limits": self.rate_limits, "status": self.state(now),
            "created_by": self.created_by, "created_at": self.created_at,
            "updated_at": self.updated_at, "revoked_at": self.revoked_at,
            "replaced_by": self.replaced_by, "last_used_at": self.last_used_at,
        }
