"""The client cache follows the event log: a change made elsewhere (the CLI, another instance)
is seen on the next poll, on every store."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from authserver import clients
from authserver.storage.db import Database
from tests import factories
from tests.conftest import make_settings, running_app

pytestmark = pytest.mark.anyio


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


async def test_change_by_another_process_reaches_the_cache(
    tmp_path: Path, database_url: str
) -> None:
    migrator = Database(database_url)
    migrator.migrate()
    migrator.dispose()
    settings = make_settings(tmp_path, database_url=database_url)
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
        other = Database(database_url)
        with other.session() as session:
            clients.update_client(session, h.runtime.catalog, record.client_id,
                                  clients.ClientUpdate(scopes=("read",)), h.runtime.clock.now())
            new_secret = clients.rotate_secret(session, record.client_id, h.runtime.clock.now())
        other.dispose()
        factories.remember(new_secret)

        # before the poll the cache still holds the old record; one poll applies the change
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
