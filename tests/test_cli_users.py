"""`authserver users disable|enable|delete USERNAME`: disabling and deleting end the person's
tokens (a `subject.cutoff` event) and sessions; each change is audited as the CLI actor."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from authserver import users
from authserver.cli.common import cli_actor
from authserver.config import Settings
from authserver.storage.db import Database
from authserver.storage.models import AuditEntry, Event, User, WebSession
from tests.test_cli_apikeys import config, run, run_json, settings
from tests.test_users import PASSWORD, with_stdin

__all__ = ["config", "settings"]  # fixtures


def signed_in(store: Database, username: str) -> str:
    """A browser session of the person; returns the cookie value."""
    with store.session(write=True) as session:
        record = users.user_by_username(session, username)
        token, _ = users.start_session(session, record, 1000.0, 3600.0)
    return token


def audited(store: Database, target: str) -> list[tuple[str, str]]:
    with store.session() as session:
        return [(e.action, e.actor) for e in session.scalars(
            select(AuditEntry).where(AuditEntry.target == target).order_by(AuditEntry.id))]


def test_disable_enable_delete(capsys: pytest.CaptureFixture[str], config: str,
                               settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    with_stdin(monkeypatch, PASSWORD + "\n")
    made: dict[str, Any] = run_json(capsys, config, "users", "create", "--username", "dave",
                                    "--role", "user", "--password-stdin")
    store = Database(settings.effective_database_url)
    cookie = signed_in(store, "dave")

    disabled = run_json(capsys, config, "users", "disable", "DAVE")
    assert disabled["status"] == "disabled" and "password" not in str(disabled)
    with store.session() as session:
        assert users.resume_session(session, cookie, 1001.0) is None
        assert session.scalars(select(WebSession)).all() == []
        cutoff = session.scalars(select(Event).where(Event.type == "subject.cutoff")).one()
        assert cutoff.subject == made["id"] and cutoff.data["reason"] == "user.disabled"
        row = session.get(User, made["id"])
        assert row is not None and row.tokens_valid_after > 0
    code, out, _ = run(capsys, config, "users", "disable", "dave")  # a repeat: a no-op
    assert code == 0 and "disabled" in out
    with store.session(write=True) as session:
        assert users.login(session, "dave", PASSWORD, 2000.0).user is None

    code, out, _ = run(capsys, config, "users", "enable", "dave")
    assert code == 0 and "dave" in out and "active" in out
    with store.session(write=True) as session:
        assert users.login(session, "dave", PASSWORD, 2001.0).user is not None

    signed_in(store, "dave")
    code, out, _ = run(capsys, config, "users", "delete", "dave")
    assert code == 0 and "deleted" in out and "cut off" in out
    with store.session() as session:
        assert session.get(User, made["id"]) is None
        assert session.scalars(select(WebSession)).all() == []
        reasons = [e.data["reason"] for e in session.scalars(
            select(Event).where(Event.type == "subject.cutoff").order_by(Event.id))]
        assert reasons == ["user.disabled", "user.deleted"]
    actor = cli_actor().name
    assert [a for a in audited(store, made["id"]) if a[0] != "user.login"] == [
        ("user.create", actor), ("user.disable", actor), ("user.enable", actor),
        ("user.delete", actor)]
    store.dispose()
    assert run_json(capsys, config, "users", "list") == []


def test_unknown_usernames_are_a_clear_error(capsys: pytest.CaptureFixture[str],
                                             config: str) -> None:
    for sub in ("disable", "enable", "delete"):
        code, _, err = run(capsys, config, "users", sub, "nobody")
        assert code == 2 and "no user nobody" in err
    with pytest.raises(SystemExit) as exited:  # argparse: the username is required
        run(capsys, config, "users", "disable")
    assert exited.value.code == 2 and "username" in capsys.readouterr().err
