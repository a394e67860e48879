"""The client cache follows the event log: a change made elsewhere (the CLI, another instance)
is seen on the next poll, on every store."""

from __future__ import annotations

from pathlib import Path

import pytest

from authserver import clients
from authserver.storage.db import Database
from tests import factories
from tests.conftest import make_settings, running_app

pytestmark = pytest.mark.anyio


basic = factories.basic_auth
MANUAL_POLL = {"event_poll_interval": 60.0, "max_staleness": 600.0}


@pytest.fixture
def migrated_url(database_url: str) -> str:
    """A database on the current schema (`serve` would refuse PostgreSQL otherwise)."""
    migrator = Database(database_url)
    migrator.migrate()
    migrator.dispose()
    return database_url


async def test_change_by_another_process_reaches_the_cache(
    tmp_path: Path, migrated_url: str
) -> None:
    # polls only when the test says so: a background poll would race the assertions
    settings = make_settings(tmp_path, database_url=migrated_url, cache=MANUAL_POLL)
    async with running_app(settings) as h:
        record, secret = factories.create_client(h.runtime, scopes=["read", "write"])
        assert secret is not None
        h.runtime.poll_events()
        form = {"grant_type": "client_credentials"}
        first = await h.http.post("/token", data=form, headers=basic(record.client_id, secret))
        assert first.status_code == 200
        factories.remember(first.json()["access_token"])
        assert h.runtime.cache.get(record.client_id) is not h.runtime.cache.MISSING

        # another process: its own engine, the same database
        other = Database(migrated_url)
        with other.session() as session:
            clients.update_client(session, h.runtime.catalog, record.client_id,
                                  clients.ClientUpdate(scopes=("read",)), h.runtime.clock.now())
            new_secret = clients.rotate_secret(session, record.client_id, h.runtime.clock.now())
        other.dispose()
        factories.remember(new_secret)

        # before the poll the cache still holds the old record (the old secret still works)
        stale = await h.http.post("/token", data=form, headers=basic(record.client_id, secret))
        assert stale.status_code == 200
        factories.remember(stale.json()["access_token"])
        assert stale.json()["scope"] == "read write"
        # one poll applies the change
        assert h.runtime.poll_events() == 2
        old = await h.http.post("/token", data=form, headers=basic(record.client_id, secret))
        assert old.status_code == 401
        new = await h.http.post("/token", data=form, headers=basic(record.client_id, new_secret))
        assert new.status_code == 200
        factories.remember(new.json()["access_token"])
        assert new.json()["scope"] == "read"
        assert h.runtime.poll_events() == 0  # rescanning the margin does not re-apply


async def test_unknown_client_is_cached_until_it_is_created(harness: object) -> None:
    from tests.conftest import AppHarness

    assert isinstance(harness, AppHarness)
    rt = harness.runtime
    response = await harness.http.post("/token", data={"grant_type": "client_credentials"},
                                       headers=basic("cli_future", "x"))
    assert response.status_code == 401
    assert rt.cache.get("cli_future") is None  # negative entry
    rt.cache.invalidate(["cli_future"])
    assert rt.cache.get("cli_future") is rt.cache.MISSING


async def test_event_bursts_larger_than_a_page_are_all_seen(
    tmp_path: Path, migrated_url: str
) -> None:
    from authserver import events

    # polls only when the test says so: a background poll would race the assertions
    settings = make_settings(tmp_path, database_url=migrated_url, cache=MANUAL_POLL)
    async with running_app(settings) as h:
        now = h.runtime.clock.now()
        with h.runtime.db.session() as session:
            for i in range(2500):
                events.record(session, "client.updated", f"cli_bulk{i}", now)
            events.record(session, "client.disabled", "cli_last", now)
        fresh = h.runtime.read_new_events()
        assert len(fresh) == 2501
        assert fresh[-1].subject == "cli_last"
        assert h.runtime.read_new_events() == []
        # a NUL byte never reaches the store (PostgreSQL would refuse it with an error)
        response = await h.http.post("/token", data={
            "grant_type": "client_credentials", "client_id": "cli_\x00x", "client_secret": "x"})
        assert response.status_code == 401


async def test_unreadable_event_log_drops_the_cache_after_the_staleness_bound(
    tmp_path: Path,
) -> None:
    from authserver.clock import FakeClock

    clock = FakeClock()
    settings = make_settings(tmp_path, cache={"max_staleness": 5.0})
    async with running_app(settings, clock) as h:
        record, _ = factories.create_client(h.runtime)
        found = await h.runtime.tokens.clients.get(record.client_id)
        assert found is not None
        clock.advance(3)
        h.runtime.enforce_staleness()  # within the bound: cached clients keep working
        assert h.runtime.cache.get(record.client_id) is found
        clock.advance(3)
        h.runtime.enforce_staleness()  # past it: dropped, the next lookup asks the store
        assert h.runtime.cache.get(record.client_id) is h.runtime.cache.MISSING


async def test_concurrent_misses_of_one_client_share_one_read(tmp_path: Path) -> None:
    import anyio

    async with running_app(make_settings(tmp_path)) as h:
        record, _ = factories.create_client(h.runtime)
        directory = h.runtime.tokens.clients
        reads: list[str] = []
        real_load = directory._load

        def counting_load(client_id: str) -> object:
            reads.append(client_id)
            return real_load(client_id)

        directory._load = counting_load  # type: ignore[method-assign]
        results: list[object] = []

        async def lookup(client_id: str) -> None:
            results.append(await directory.get(client_id))

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(lookup, record.client_id)
                tg.start_soon(lookup, "cli_unknown")
        assert sorted(reads) == sorted([record.client_id, "cli_unknown"])
        assert sum(1 for r in results if r is None) == 20
        assert sum(1 for r in results if r is not None) == 20


async def test_a_hanging_poll_still_drops_the_cache_after_the_bound(tmp_path: Path) -> None:
    import threading

    import anyio

    settings = make_settings(tmp_path, cache={"event_poll_interval": 0.1, "max_staleness": 0.5})
    release = threading.Event()
    async with running_app(settings) as h:
        record, secret = factories.create_client(h.runtime)
        assert secret is not None
        form = {"grant_type": "client_credentials"}
        ok = await h.http.post("/token", data=form, headers=basic(record.client_id, secret))
        assert ok.status_code == 200
        factories.remember(ok.json()["access_token"])
        real_read = h.runtime.read_new_events

        def stuck() -> list[object]:
            release.wait(timeout=10)  # a poll stuck in the database
            return []

        h.runtime.read_new_events = stuck  # type: ignore[method-assign,assignment]
        other = Database(settings.effective_database_url)
        with other.session() as session:
            clients.set_disabled(session, record.client_id, True, h.runtime.clock.now())
        other.dispose()
        await anyio.sleep(1.2)
        refused = await h.http.post("/token", data=form, headers=basic(record.client_id, secret))
        release.set()
        h.runtime.read_new_events = real_read  # type: ignore[method-assign]
        assert refused.status_code == 401


async def test_a_failing_read_is_shared_not_queued(tmp_path: Path) -> None:
    import time

    import anyio
    from sqlalchemy.exc import OperationalError

    from authserver.errors import TemporarilyUnavailable

    async with running_app(make_settings(tmp_path)) as h:
        directory = h.runtime.tokens.clients
        reads: list[float] = []

        def failing(client_id: str) -> None:
            reads.append(time.monotonic())
            time.sleep(0.3)
            raise OperationalError("select", {}, Exception("down"))

        directory._load = failing  # type: ignore[method-assign,assignment]
        outcomes: list[str] = []

        async def lookup() -> None:
            try:
                await directory.get("cli_any")
                outcomes.append("ok")
            except TemporarilyUnavailable:
                outcomes.append("503")

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(lookup)
        assert outcomes == ["503"] * 8
        assert len(reads) == 1
        assert time.monotonic() - started < 1.0
