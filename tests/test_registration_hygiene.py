"""Keeping the registration table clean: the reaping rule, last-use tracking, and the CLI
(`registration-tokens`, `registration reap`, `clients list --registered`)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from authserver.cli import main
from authserver.clock import FakeClock
from authserver.config import ConfigError
from authserver.storage.models import Client, ClientRegistration, Event
from tests import factories
from tests.conftest import make_settings, running_app

pytestmark = pytest.mark.anyio
DAY = 86400.0
MACHINE = {"client_name": "agent", "grant_types": ["client_credentials"],
           "software_id": "agent-sdk", "software_version": "2.1"}


async def register(http: httpx.AsyncClient, name: str, **headers: str) -> dict[str, Any]:
    response = await http.post("/register", json={**MACHINE, "client_name": name},
                               headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    factories.remember(body.get("client_secret"))
    factories.remember(body["registration_access_token"])
    return body


async def use(http: httpx.AsyncClient, body: dict[str, Any]) -> None:
    response = await http.post("/token", data={"grant_type": "client_credentials"},
                               auth=(body["client_id"], body["client_secret"]))
    assert response.status_code == 200
    factories.remember(response.json()["access_token"])


def client_ids(runtime: Any) -> set[str]:
    with runtime.db.session() as session:
        return set(session.scalars(select(Client.client_id)))


async def test_reaper_removes_unused_and_idle_registrations_only(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, registration={
        "reap_unused_after": DAY, "reap_idle_after": 30 * DAY})
    async with running_app(settings, clock) as h:
        never_used = await register(h.http, "never used")
        used_once = await register(h.http, "used once")
        busy = await register(h.http, "busy")
        operator_made, _ = factories.create_client(h.runtime)
        await use(h.http, used_once)
        await use(h.http, busy)

        clock.advance(DAY + 1)  # past the rule, but within the flush margin: a use elsewhere
        assert h.runtime.reap_registrations() == 0  # may not have been written yet
        clock.advance(settings.cache.last_used_flush_interval)
        with caplog.at_level(logging.INFO, logger="authserver"):
            assert h.runtime.reap_registrations() == 1
        assert "reaped 1 unused self-registered clients" in caplog.text
        assert never_used["client_id"] not in client_ids(h.runtime)

        clock.advance(29 * DAY)
        await use(h.http, busy)  # noted in memory only; the reaper flushes it first
        assert h.runtime.reap_registrations() == 1
        assert client_ids(h.runtime) == {busy["client_id"], operator_made.client_id}

        with h.runtime.db.session() as session:
            reaped = session.scalars(select(Event).where(
                Event.type == "client.deleted")).all()
            assert {e.subject for e in reaped} == {never_used["client_id"],
                                                   used_once["client_id"]}
            assert all(e.data["reason"] == "reaped" for e in reaped)
            # the registration rows went with their clients
            assert set(session.scalars(select(ClientRegistration.client_id))) == {
                busy["client_id"]}


async def test_reaping_can_be_switched_off(tmp_path: Path, clock: FakeClock) -> None:
    settings = make_settings(tmp_path, registration={"reap_unused_after": 0,
                                                     "reap_idle_after": 0})
    async with running_app(settings, clock) as h:
        await register(h.http, "kept")
        clock.advance(365 * DAY)
        assert h.runtime.reap_registrations() == 0
        assert len(client_ids(h.runtime)) == 1


def test_reaping_thresholds_must_exceed_the_flush_interval(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="reap_unused_after"):
        make_settings(tmp_path, registration={"reap_unused_after": 60},
                      cache={"last_used_flush_interval": 60})


async def test_last_use_survives_a_failed_flush(tmp_path: Path, clock: FakeClock) -> None:
    async with running_app(make_settings(tmp_path), clock) as h:
        body = await register(h.http, "agent")
        await use(h.http, body)
        pending = h.runtime.usage.take()
        assert pending == {body["client_id"]: clock.now()}
        h.runtime.usage.give_back(pending)  # what flush_usage does when the write fails
        h.runtime.flush_usage()
        with h.runtime.db.session() as session:
            assert session.get(Client, body["client_id"]).last_used_at == clock.now()  # type: ignore[union-attr]


# -- the CLI -----------------------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "authserver.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "data"}"\nkeys_dir = "{tmp_path / "keys"}"\n'
        '[[scopes]]\nname = "read"\n[[scopes]]\nname = "portal-provision"\napi_key_only = true\n'
        '[registration]\npolicy = "initial_access_token"\n'
    )
    return str(path)


def cli(capsys: pytest.CaptureFixture[str], config: str, *args: str) -> Any:
    code = main(["--config", config, "--json", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def cli_fails(capsys: pytest.CaptureFixture[str], config: str, *args: str) -> str:
    assert main(["--config", config, *args]) == 2
    return capsys.readouterr().err


async def test_registration_cli(
    capsys: pytest.CaptureFixture[str], config: str, tmp_path: Path
) -> None:
    created = cli(capsys, config, "registration-tokens", "create", "--scope", "read",
                  "--max-uses", "3", "--expires-in", "7d", "--description", "ci agents")
    token = factories.remember(created["token"])
    assert token is not None and token.startswith("asiat_")
    assert created["max_uses"] == 3 and created["scope"] == "read"
    assert created["expires_at"] == pytest.approx(created["created_at"] + 7 * DAY)
    assert "API-key only" in cli_fails(capsys, config, "registration-tokens", "create",
                                       "--scope", "portal-provision")
    assert "--expires-in" in cli_fails(capsys, config, "registration-tokens", "create",
                                       "--expires-in", "soon")

    # software registers with it, two days ago
    shared_db = f"sqlite:///{tmp_path / 'data' / 'authserver.db'}"  # the CLI's database
    settings = make_settings(tmp_path, database_url=shared_db,
                             scopes=[{"name": "read"}],
                             registration={"policy": "initial_access_token"})
    async with running_app(settings, FakeClock(time.time() - 2 * DAY)) as h:
        body = await register(h.http, "old agent", authorization=f"Bearer {token}")

    listed = cli(capsys, config, "registration-tokens", "list")
    assert [(t["id"], t["uses"], t["state"]) for t in listed] == [(created["id"], 1, "active")]
    assert token not in json.dumps(listed)
    registered = cli(capsys, config, "clients", "list", "--registered")
    assert [(c["client_id"], c["software_id"], c["initial_access_token_id"])
            for c in registered] == [(body["client_id"], "agent-sdk", created["id"])]
    main(["--config", config, "clients", "list", "--registered"])
    text = capsys.readouterr().out
    assert "agent-sdk 2.1" in text and created["id"] in text

    dry = cli(capsys, config, "registration", "reap", "--dry-run")
    assert dry == {"reaped": 1, "dry_run": True, "client_ids": [body["client_id"]]}
    assert cli(capsys, config, "clients", "list", "--registered") != []
    assert cli(capsys, config, "registration", "reap")["reaped"] == 1
    assert cli(capsys, config, "clients", "list", "--registered") == []

    revoked = cli(capsys, config, "registration-tokens", "revoke", created["id"])
    assert revoked["state"] == "revoked"
    assert "no initial access token" in cli_fails(capsys, config, "registration-tokens",
                                                  "revoke", "iat_missing")


async def eventually(check: Any, seconds: float = 5.0) -> None:
    """Poll the store until `check()` holds (the background tasks run on real time)."""
    import anyio

    for _ in range(int(seconds / 0.02)):
        if check():
            return
        await anyio.sleep(0.02)
    raise AssertionError("the background task did not act in time")


async def test_serve_reaps_and_flushes_by_itself(tmp_path: Path, clock: FakeClock) -> None:
    """The background tasks of a running server: last-use flush and reaper, no manual call."""
    settings = make_settings(tmp_path, registration={"reap_interval": 0.05},
                             cache={"last_used_flush_interval": 0.05})
    async with running_app(settings, clock) as h:
        unused = await register(h.http, "unused")
        used = await register(h.http, "used")
        await use(h.http, used)

        def last_used() -> float | None:
            with h.runtime.db.session() as session:
                row = session.get(Client, used["client_id"])
                return None if row is None else row.last_used_at

        await eventually(lambda: last_used() == clock.now())
        clock.advance(DAY + 1)
        await eventually(lambda: unused["client_id"] not in client_ids(h.runtime))
        assert used["client_id"] in client_ids(h.runtime)
