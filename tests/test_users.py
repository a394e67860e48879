"""People: `users create` / `admin create-user`, argon2id hashes, login with lockout and
backoff (audited, never the password), and `authserver init`."""

from __future__ import annotations

import io
from typing import Any

import pytest
from sqlalchemy import select

from authserver import users
from authserver.config import Settings
from authserver.storage.db import Database
from authserver.storage.models import AuditEntry, User
from tests import factories
from tests.test_cli_apikeys import Checker, config, run, run_json, settings

__all__ = ["config", "settings"]  # fixtures
PASSWORD = "correct horse battery staple"


def with_stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))


def db(settings: Settings) -> Database:
    return Database(settings.effective_database_url)


def test_create_user_and_log_in(capsys: pytest.CaptureFixture[str], config: str,
                                settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    with_stdin(monkeypatch, PASSWORD + "\n")
    made = run_json(capsys, config, "admin", "create-user", "--username", "Alice",
                    "--email", "alice@example.com", "--password-stdin")
    assert made["username"] == "alice" and made["role"] == "admin"
    store = db(settings)
    with store.session() as session:
        row = session.scalars(select(User)).one()
        assert row.password_hash.startswith("$argon2id$") and PASSWORD not in row.password_hash
    with store.session(write=True) as session:
        assert users.login(session, "ALICE ", PASSWORD, 1000.0, "10.0.0.1").user is not None
        assert users.login(session, "alice", "wrong password!", 1001.0).user is None
        assert users.login(session, "nobody", PASSWORD, 1002.0).user is None
    with store.session() as session:
        entries = session.scalars(select(AuditEntry).where(
            AuditEntry.action == "user.login").order_by(AuditEntry.id)).all()
        assert [(e.outcome, e.actor.split(":")[0]) for e in entries] == [
            ("success", "user"), ("failure", "user"), ("failure", "anonymous")]
        assert entries[0].source == "10.0.0.1"
        assert all(PASSWORD not in str(e.details) for e in entries)
    store.dispose()
    with_stdin(monkeypatch, PASSWORD + "\n")
    code, _, err = run(capsys, config, "users", "create", "--username", "alice",
                       "--password-stdin")
    assert code == 2 and "taken" in err
    with_stdin(monkeypatch, "short\n")
    code, _, err = run(capsys, config, "users", "create", "--username", "bob",
                       "--password-stdin")
    assert code == 2 and "password" in err
    listed = run_json(capsys, config, "users", "list")
    assert [u["username"] for u in listed] == ["alice"]


def test_lockout_backoff_and_reset(capsys: pytest.CaptureFixture[str], config: str,
                                   settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    with_stdin(monkeypatch, PASSWORD + "\n")
    run_json(capsys, config, "users", "create", "--username", "carol", "--role", "user",
             "--password-stdin")
    store = db(settings)
    now = 5000.0
    with store.session(write=True) as session:
        for _ in range(users.FREE_FAILURES):
            assert users.login(session, "carol", "nope nope nope", now).locked_for is None
        sixth = users.login(session, "carol", "nope nope nope", now)  # locks: 30 s
        locked = users.login(session, "carol", PASSWORD, now + 10)  # right, but locked
        assert sixth.user is None and locked.user is None and locked.locked_for == 20
        assert users.login(session, "carol", PASSWORD, now + 31).user is not None
        for _ in range(users.FREE_FAILURES + 2):  # the 7th is refused: locked, not counted
            users.login(session, "carol", "nope nope nope", now + 40)
        row = session.scalars(select(User)).one()
        assert (row.failed_logins, row.locked_until) == (6, now + 40 + 30)
        users.login(session, "carol", "nope nope nope", now + 71)  # after the lock: doubles
        assert (row.failed_logins, row.locked_until) == (7, now + 71 + 60)
    store.dispose()
    with_stdin(monkeypatch, "a brand new password\n")
    run_json(capsys, config, "users", "set-password", "--username", "carol",
             "--password-stdin")
    with store.session(write=True) as session:
        assert users.login(session, "carol", "a brand new password", now + 41).user is not None
    store.dispose()


@pytest.mark.anyio
async def test_init_creates_one_admin_key(capsys: pytest.CaptureFixture[str], config: str,
                                          settings: Settings) -> None:
    made: dict[str, Any] = run_json(capsys, config, "init")
    key = factories.remember(made["key"])
    assert key and made["api_key"]["permissions"] == ["*"]
    assert made["api_key"]["org_id"] == "org_default"
    checker = Checker(settings)
    try:
        record = await checker.check(key)
        assert not isinstance(record, Exception) and record.permissions == ("*",)
    finally:
        checker.close()
    code, _, err = run(capsys, config, "init")
    assert code == 2 and "already has API keys" in err
    again = run_json(capsys, config, "init", "--force")
    factories.remember(again["key"])
    assert again["api_key"]["id"] != made["api_key"]["id"]
    code, out, err = run(capsys, config, "init", "--force")  # text mode: key last, once
    key_line = out.strip().splitlines()[-1]
    factories.remember(key_line)
    assert code == 0 and key_line.startswith("as_live_") and "shown only now" in err
