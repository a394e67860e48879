"""The dashboard: counts, this instance's token rate, the last failures."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from authserver import users
from authserver.storage.models import ApiKey, AuditEntry, Client, Organization
from authserver.web.admin_ui.base import AdminUiBase


class DashboardPage(AdminUiBase):
    async def dashboard(self, request: Request, signed: users.SignedIn) -> Response:
        org = self.org_filter(signed)
        now = self.deps.clock.now()
        since = now - 86400

        def counts(session: Session) -> dict[str, Any]:
            def count(model: Any, *where: Any) -> int:
                return int(session.scalar(select(func.count()).select_from(model).where(
                    *where)) or 0)
            in_org = [] if org is None else [Client.org_id == org]
            keys_in_org = [] if org is None else [ApiKey.org_id == org]
            failures = select(AuditEntry).where(
                AuditEntry.outcome != "success", AuditEntry.at >= since,
                *([] if org is None else [AuditEntry.org_id == org])
            ).order_by(AuditEntry.id.desc()).limit(10)
            return {
                "clients": count(Client, *in_org),
                "registered": count(Client, Client.origin == "dcr", *in_org),
                "api_keys": count(ApiKey, ApiKey.status == "active", *keys_in_org),
                "organizations": count(Organization) if org is None else 1,
                "failures": list(session.scalars(failures)),
            }

        stats = await self.db(counts)
        # Tokens of every organisation: only the operator sees the instance's figure.
        rate = self.token_rate.figures(now) if self.token_rate and org is None else None
        return self.render(request, "dashboard.html", signed=signed, rate=rate, **stats)
