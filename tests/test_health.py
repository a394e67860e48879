"""/healthz and /readyz, and JSON logs with request ids and no secrets (docs/observability.md)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from authserver import apikeys, audit, logs
from authserver.config import Settings
from authserver.web import observability
from authserver.web.credentials import redact
from authserver.wiring import build_runtime, create_app
from tests import factories
from tests.conftest import AppHarness, bind_loopback, make_settings, serve_in_thread

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def without_lifespan(settings: Settings, migrate: bool, key: bool
                           ) -> AsyncIterator[httpx.AsyncClient]:
    """The app as a probe finds it before (or without) a good start: nothing migrated or
    loaded unless asked."""
    runtime = build_runtime(settings)
    app = create_app(settings, runtime=runtime)
    if migrate:
        runtime.db.migrate()
    if key:
        runtime.keyring.ensure_signer(settings.signing.algorithm, runtime.clock.now())
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 50000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url=settings.issuer) as http:
            yield http
    finally:
        runtime.db.dispose()


async def test_healthz(harness: AppHarness) -> None:
    for method in ("GET", "HEAD"):
        response = await harness.http.request(method, "/healthz")
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
    assert (await harness.http.get("/healthz")).json() == {"status": "ok"}


async def test_ready_when_all_is_well(harness: AppHarness) -> None:
    response = await harness.http.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {"status": "ok", "checks": {
        "database": {"status": "ok"}, "signing_key": {"status": "ok"},
        "migrations": {"status": "ok"}}}


async def test_not_ready_when_the_database_is_unreachable(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, database_url="postgresql://postgres@127.0.0.1:1/x",
                             database={"connect_timeout": 1})
    async with without_lifespan(settings, migrate=False, key=True) as http:
        response = await http.get("/readyz")
        assert (await http.get("/healthz")).status_code == 200  # the process still serves
    assert response.status_code == 503
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["status"] == "failed"
    assert "unreachable" in body["checks"]["database"]["detail"]
    assert body["checks"]["signing_key"] == {"status": "ok"}
    assert body["checks"]["migrations"]["status"] == "failed"


async def test_not_ready_with_pending_migrations(database_url: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observability, "MIGRATIONS_PENDING_TTL", 0.0)
    settings = make_settings(tmp_path, database_url)
    runtime = build_runtime(settings)
    app = create_app(settings, runtime=runtime)
    runtime.keyring.ensure_signer(settings.signing.algorithm, runtime.clock.now())
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url=settings.issuer) as http:
            pending = await http.get("/readyz")
            assert pending.status_code == 503
            checks = pending.json()["checks"]
            assert checks["database"] == {"status": "ok"}
            assert checks["signing_key"] == {"status": "ok"}
            assert checks["migrations"] == {"status": "failed",
                                            "detail": "pending: run `authserver migrate`"}
            runtime.db.migrate()
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
    finally:
        runtime.db.dispose()


async def test_not_ready_without_an_active_signing_key(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with without_lifespan(settings, migrate=True, key=False) as http:
        response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["signing_key"] == {
        "status": "failed", "detail": "no signing key is active"}
    assert response.json()["checks"]["database"] == {"status": "ok"}


def test_json_logs_carry_request_ids_and_no_secret(tmp_path: Path) -> None:
    """Over a real socket, uvicorn's access log included: every line is JSON, lines logged
    during a request carry its id, and neither a client secret nor an API key appears."""
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    handler.setFormatter(logs.JsonFormatter(redact))
    handler.addFilter(logs.RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    # The test's own HTTP client logs the URLs it asks for, secrets and all: not the server's.
    quiet = [logging.getLogger(name) for name in ("httpx", "httpcore")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.WARNING)
    settings = make_settings(tmp_path, server={"trusted_proxies": ["127.0.0.1/32"]})
    runtime = build_runtime(settings)
    app = create_app(settings, runtime=runtime)
    sock, url = bind_loopback()
    server, thread = serve_in_thread(app, sock)
    try:
        client, secret = factories.create_client(runtime, scopes=["read"])
        assert secret is not None
        with runtime.db.session(write=True) as session:
            _, key = apikeys.create_key(
                session, runtime.catalog,
                apikeys.ApiKeySpec("k", "org_default", ("invoices.read",)), "as",
                runtime.clock.now(), audit.Actor("test"))
        factories.remember(key)
        with httpx.Client(base_url=url) as http:
            token = http.post("/token", data={"grant_type": "client_credentials"},
                              headers={**factories.basic_auth(client.client_id, secret),
                                       "x-request-id": "req-token-1"})
            assert token.status_code == 200
            factories.remember(token.json()["access_token"])
            # secrets where a log line could catch them: in the query string
            http.get(f"/nowhere?client_secret={secret}", headers={"x-request-id": "req-404"})
            decided = http.get(f"/forward-auth?x-api-key={key}",
                               headers={"x-request-id": "req-fa-1",
                                        "x-forwarded-method": "GET",
                                        "x-forwarded-uri": f"/api/v1/invoices/1?x-api-key={key}"})
            assert decided.status_code == 200, decided.text
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        root.removeHandler(handler)
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
        runtime.db.dispose()
    output = captured.getvalue()
    assert secret not in output and key not in output
    lines = [json.loads(line) for line in output.splitlines()]  # every line is JSON
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    access = {line.get("request_id"): line for line in lines if line["logger"] == "uvicorn.access"}
    assert access["req-token-1"]["path"] == "/token" and access["req-token-1"]["status"] == 200
    assert access["req-404"]["status"] == 404
    assert "[redacted]" in access["req-404"]["path"]
    assert access["req-fa-1"]["status"] == 200
    warning = next(line for line in lines if line["logger"] == "authserver.api_keys")
    assert warning["request_id"] == "req-fa-1" and warning["level"] == "WARNING"
