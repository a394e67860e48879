"""Test data built through the real domain functions, and the registry of issued secrets."""

from __future__ import annotations

import base64
from typing import Any

from authserver import clients
from authserver.clients import ClientRecord
from authserver.wiring import Runtime

_ISSUED: set[str] = set()


def remember(secret: str | None) -> str | None:
    """Register a secret or token; the session fixture checks the logs never contain it."""
    if secret:
        _ISSUED.add(secret)
    return secret


def leaked_secrets(log_text: str) -> list[str]:
    return [s for s in _ISSUED if s in log_text]


def basic_auth(client_id: str, secret: str) -> dict[str, str]:
    """Headers of a client_secret_basic form POST."""
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"authorization": f"Basic {raw}",
            "content-type": "application/x-www-form-urlencoded"}


def create_client(runtime: Runtime, **spec: Any) -> tuple[ClientRecord, str | None]:
    spec.setdefault("name", "test client")
    for key in ("scopes", "ip_allow", "resources"):
        if key in spec:
            spec[key] = tuple(spec[key])
    with runtime.db.session() as session:
        record, secret = clients.create_client(
            session, runtime.catalog, clients.ClientSpec(**spec), runtime.clock.now()
        )
    remember(secret)
    return record, secret
