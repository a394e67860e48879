"""The store down, in-process: every path answers 503 `temporarily_unavailable` in its own
format (never a 500), cached clients are used only within `cache.max_staleness`, and the
background jobs put their batches back (docs/deploy.md, "When the database is down")."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from authserver import apikeys, audit
from authserver.clock import FakeClock
from authserver.storage.db import Database
from authserver.storage.models import DEFAULT_ORG_ID, Client
from tests import factories
from tests.conftest import AppHarness, make_settings, running_app

pytestmark = pytest.mark.anyio
TOKEN = {"grant_type": "client_credentials"}


@contextmanager
def store_down(db: Database) -> Iterator[None]:
    """Every service shares this Database: point it at a port nothing listens on."""
    engine, sessions = db.engine, db._sessions
    dead = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/nothing",
                         connect_args={"connect_timeout": 2})
    db.engine, db._sessions = dead, sessionmaker(dead, expire_on_commit=False)
    try:
        yield
    finally:
        dead.dispose()
        db.engine, db._sessions = engine, sessions


@contextmanager
def count_statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def note(*args: Any) -> None:
        seen.append(str(args[2]))

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", note)


def assert_oauth_503(response: Any) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "temporarily_unavailable"
    assert int(response.headers["retry-after"]) > 0
    assert response.headers["cache-control"] == "no-store"


def assert_envelope_503(response: Any) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "temporarily_unavailable" and error["status"] == 503
    assert int(response.headers["retry-after"]) > 0


async def test_cached_clients_work_within_the_staleness_bound_only(tmp_path: Path) -> None:
    clock = FakeClock(1_000_000.0)
    settings = make_settings(tmp_path, cache={"event_poll_interval": 60.0,
                                              "max_staleness": 10.0})
    async with running_app(settings, clock) as h:
        client, secret = factories.create_client(h.runtime)
        assert secret
        auth = factories.basic_auth(client.client_id, secret)
        assert (await h.http.post("/token", data=TOKEN, headers=auth)).status_code == 200
        # a cached client costs the store nothing: it keeps working while the store is down
        with count_statements(h.runtime.db) as seen:
            assert (await h.http.post("/token", data=TOKEN, headers=auth)).status_code == 200
        assert seen == []
        with store_down(h.runtime.db):
            clock.advance(5)
            h.runtime.enforce_staleness()
            assert (await h.http.post("/token", data=TOKEN, headers=auth)).status_code == 200
            with pytest.raises(SQLAlchemyError):
                h.runtime.poll_events()  # the event log cannot be read...
            clock.advance(6)  # ...for longer than max_staleness: the cache is not trusted
            h.runtime.enforce_staleness()
            assert_oauth_503(await h.http.post("/token", data=TOKEN, headers=auth))
        h.runtime.poll_events()  # the store is back: so is everything else
        h.runtime.enforce_staleness()
        assert (await h.http.post("/token", data=TOKEN, headers=auth)).status_code == 200


async def test_every_path_answers_503_in_its_format(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, server={"trusted_proxies": ["127.0.0.1/32"]})
    async with running_app(settings) as harness:
        await _every_path(harness)


async def _every_path(harness: AppHarness) -> None:
    rt = harness.runtime
    client, secret = factories.create_client(rt, scopes=["revocation-feed"])
    assert secret
    with rt.db.session(write=True) as session:
        _, key = apikeys.create_key(session, rt.catalog,
                                    apikeys.ApiKeySpec("k", DEFAULT_ORG_ID, ("*",)),
                                    rt.settings.api_keys.prefix, rt.clock.now(),
                                    audit.Actor("test"))
    factories.remember(key)
    auth = factories.basic_auth(client.client_id, secret)
    http = harness.http
    rt.cache.clear()
    rt.api_key_cache.clear()
    rt.denied.stale = True  # as after max_staleness without the event log
    with store_down(rt.db):
        assert_oauth_503(await http.post("/token", data=TOKEN, headers=auth))
        assert_oauth_503(await http.post("/revoke", data={"token": "x"}, headers=auth))
        assert_oauth_503(await http.post("/introspect", data={"token": "x"}, headers=auth))
        assert_oauth_503(await http.post("/sets/poll", json={"returnImmediately": True},
                                         headers={"authorization": auth["authorization"]}))
        assert_oauth_503(await http.post("/register", json={
            "client_name": "x", "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "client_secret_basic"}))
        api = {"x-api-key": key}
        assert_envelope_503(await http.get("/api/v1/clients", headers=api))
        assert_envelope_503(await http.post("/api/v1/organizations", json={"name": "x"},
                                            headers=api))
        assert_envelope_503(await http.get("/api/v1/api-key", headers=api))
        assert_envelope_503(await http.get("/forward-auth", headers={
            **api, "x-forwarded-method": "GET", "x-forwarded-uri": "/clients"}))
        login = await http.post("/admin/login", data={"login": "a", "password": "b"})
        assert login.status_code == 503, login.text
        assert "Traceback" not in login.text
        # the background jobs fail, and keep what they were to write
        rt.usage.touch(client.client_id, rt.clock.now())
        with pytest.raises(SQLAlchemyError):
            rt.flush_usage()
    rt.flush_usage()  # the store is back: the last use noted during the outage is written
    with rt.db.session() as session:
        assert session.get(Client, client.client_id).last_used_at is not None  # type: ignore[union-attr]
