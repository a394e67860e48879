"""`authserver orgs` and `authserver api-keys`, run in-process against a temporary configuration;
the keys they print are checked by the server's own authenticator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from authserver.apikeys import ApiKeyRecord
from authserver.cli import main
from authserver.cli.common import cli_actor
from authserver.clock import Clock, FakeClock
from authserver.config import Settings, load_settings
from authserver.errors import ApiError
from authserver.storage.db import Database
from authserver.storage.models import ApiKey, AuditEntry
from authserver.wiring import Runtime, build_runtime
from tests import factories


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "authserver.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "data"}"\nkeys_dir = "{tmp_path / "keys"}"\n'
        '[[scopes]]\nname = "portal-provision"\napi_key_only = true\n'
    )
    return str(path)


@pytest.fixture
def settings(config: str) -> Settings:
    return load_settings(config)


def run(capsys: pytest.CaptureFixture[str], config: str, *args: str) -> tuple[int, str, str]:
    code = main(["--config", config, *args])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], config: str, *args: str) -> Any:
    code, out, err = run(capsys, config, "--json", *args)
    assert code == 0, err
    return json.loads(out)


def new_org(capsys: pytest.CaptureFixture[str], config: str, name: str = "Acme") -> str:
    org_id: str = run_json(capsys, config, "orgs", "create", "--name", name)["id"]
    return org_id


def new_key(capsys: pytest.CaptureFixture[str], config: str, org: str,
            *options: str) -> tuple[str, str]:
    """(key id, key) of a key created with `--json`."""
    made = run_json(capsys, config, "api-keys", "create", "--org", org, "--name", "billing",
                    *(options or ("--permission", "invoices.read")))
    assert set(made) == {"api_key", "key"}
    return made["api_key"]["id"], str(factories.remember(made["key"]))


class Checker:
    """The server's authenticator on the same store (a fresh cache each call unless kept)."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.runtime: Runtime = build_runtime(settings, clock)

    async def check(self, key: str, address: str = "127.0.0.1") -> ApiKeyRecord | ApiError:
        try:
            return await self.runtime.api_keys.authenticate(key, address)
        except ApiError as exc:
            return exc

    def close(self) -> None:
        self.runtime.db.dispose()


async def authenticate(settings: Settings, key: str, clock: Clock | None = None,
                       address: str = "127.0.0.1") -> ApiKeyRecord | ApiError:
    checker = Checker(settings, clock)
    try:
        return await checker.check(key, address)
    finally:
        checker.close()


def refused(result: ApiKeyRecord | ApiError) -> tuple[str, object]:
    assert isinstance(result, ApiError), f"{result!r} was accepted"
    return result.code, result.details.get("reason")


def audit_actions(settings: Settings) -> list[tuple[str, str, str]]:
    db = Database(settings.effective_database_url)
    try:
        with db.session() as session:
            rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
            return [(r.actor, r.action, r.target) for r in rows]
    finally:
        db.dispose()


def digest_of(settings: Settings, key_id: str) -> str:
    db = Database(settings.effective_database_url)
    try:
        with db.session() as session:
            row = session.get(ApiKey, key_id)
            assert row is not None
            return row.digest
    finally:
        db.dispose()


# -- organisations -----------------------------------------------------------------------------


def test_org_commands(capsys: pytest.CaptureFixture[str], config: str) -> None:
    org = new_org(capsys, config)
    assert org.startswith("org_")
    listed = run_json(capsys, config, "orgs", "list")
    assert [o["id"] for o in listed] == ["org_default", org]
    renamed = run_json(capsys, config, "orgs", "rename", org, "--name", "Acme Ltd")
    assert renamed == {**renamed, "id": org, "name": "Acme Ltd", "status": "active"}
    assert run_json(capsys, config, "orgs", "disable", org)["status"] == "disabled"
    assert run_json(capsys, config, "orgs", "disable", org)["status"] == "disabled"  # no-op
    assert run_json(capsys, config, "orgs", "show", org)["status"] == "disabled"
    code, out, _ = run(capsys, config, "orgs", "enable", org)
    assert code == 0 and out.strip() == f"organisation {org} is active"
    code, out, _ = run(capsys, config, "orgs", "list")
    assert code == 0 and "org_default" in out and "Acme Ltd" in out
    code, out, err = run(capsys, config, "orgs", "show", "org_nope")
    assert (code, out, err) == (2, "", "authserver: no organisation org_nope\n")
    code, _, err = run(capsys, config, "orgs", "rename", org, "--name", " ")
    assert code == 2 and err.startswith("authserver: name:")


# -- API keys ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_created_key_is_shown_once_and_authenticates(
    capsys: pytest.CaptureFixture[str], config: str, settings: Settings
) -> None:
    org = new_org(capsys, config)
    code, out, err = run(capsys, config, "api-keys", "create", "--org", org, "--name", "billing",
                         "--permission", "invoices.read", "--permission", "customers.*",
                         "--environment", "test", "--ip-allow", "127.0.0.0/8",
                         "--expires-in", "1d", "--rate-limit", "hourly=1000/hour",
                         "--rate-limit", "burst=60/minute")
    assert code == 0
    key = str(factories.remember(out.strip().splitlines()[-1]))
    assert key.startswith("as_test_") and out.count(key) == 1
    assert "will not be shown again" in err and key not in err
    record = await authenticate(settings, key)
    assert isinstance(record, ApiKeyRecord)
    assert record.org_id == org and record.permissions == ("invoices.read", "customers.*")
    assert record.rate_limits == {"hourly": "1000/hour", "burst": "60/minute"}
    assert record.created_by == cli_actor().name
    assert refused(await authenticate(settings, key, address="10.1.2.3")) == (
        "invalid_api_key", "ip_whitelist_mismatch")

    made = run_json(capsys, config, "api-keys", "create", "--org", org, "--name", "svc",
                    "--permission", "portal-provision", "--expires-at", "2099-01-01T00:00:00Z")
    factories.remember(made["key"])
    assert made["key"].startswith("as_live_")
    assert made["api_key"]["expires_at"] == 4070908800.0
    assert made["api_key"]["permissions"] == ["portal-provision"]
    assert isinstance(await authenticate(settings, made["key"]), ApiKeyRecord)


def test_list_and_show_never_print_the_key(
    capsys: pytest.CaptureFixture[str], config: str, settings: Settings
) -> None:
    org = new_org(capsys, config)
    key_id, key = new_key(capsys, config, org)
    other_id, _ = new_key(capsys, config, "org_default")
    digest = digest_of(settings, key_id)
    outputs = []
    for args in (("api-keys", "list"), ("api-keys", "list", "--org", org),
                 ("api-keys", "list", "--include-revoked"), ("api-keys", "show", key_id)):
        for mode in ((), ("--json",)):
            code, out, err = run(capsys, config, *mode, *args)
            assert code == 0, err
            outputs.append(out + err)
    assert all(key not in o and digest not in o for o in outputs)
    assert all(key_id in o for o in outputs)
    assert [k["id"] for k in run_json(capsys, config, "api-keys", "list", "--org", org)] == [
        key_id]
    assert {k["id"] for k in run_json(capsys, config, "api-keys", "list")} == {key_id, other_id}
    shown = run_json(capsys, config, "api-keys", "show", key_id)
    assert "key" not in shown and "digest" not in shown and shown["status"] == "active"
    # a key pasted where an id belongs is refused without being echoed
    code, out, err = run(capsys, config, "api-keys", "show", key)
    assert code == 2 and key not in out + err and "key id" in err


@pytest.mark.anyio
async def test_update(capsys: pytest.CaptureFixture[str], config: str,
                      settings: Settings) -> None:
    org = new_org(capsys, config)
    key_id, key = new_key(capsys, config, org, "--permission", "invoices.read",
                          "--permission", "invoices.create", "--expires-in", "3600")
    updated = run_json(capsys, config, "api-keys", "update", key_id, "--name", "billing v2",
                       "--permission", "customers.read", "--ip-allow", "10.0.0.0/8",
                       "--no-expiry", "--rate-limit", "burst=5/minute")
    assert updated["permissions"] == ["customers.read"]  # replaced, not added
    assert updated["name"] == "billing v2" and updated["expires_at"] is None
    assert updated["ip_allowlist"] == ["10.0.0.0/8"]
    assert updated["rate_limits"] == {"burst": "5/minute"}
    assert refused(await authenticate(settings, key)) == ("invalid_api_key",
                                                          "ip_whitelist_mismatch")
    cleared = run_json(capsys, config, "api-keys", "update", key_id, "--clear-ip-allow",
                       "--clear-rate-limits", "--expires-at", "4070908800")
    assert cleared["ip_allowlist"] == [] and cleared["rate_limits"] == {}
    assert cleared["expires_at"] == 4070908800.0
    record = await authenticate(settings, key)
    assert isinstance(record, ApiKeyRecord) and record.permissions == ("customers.read",)
    code, out, err = run(capsys, config, "api-keys", "update", key_id)
    assert code == 2 and out == "" and "nothing to change" in err


@pytest.mark.anyio
async def test_rotate_with_grace_keeps_both_until_it_ends(
    capsys: pytest.CaptureFixture[str], config: str, settings: Settings
) -> None:
    org = new_org(capsys, config)
    old_id, old_key = new_key(capsys, config, org)
    code, out, err = run(capsys, config, "api-keys", "rotate", old_id, "--grace-period", "1h")
    assert code == 0 and "will not be shown again" in err
    new_key_ = str(factories.remember(out.strip().splitlines()[-1]))
    assert new_key_ != old_key and old_key not in out + err
    assert f"{old_id} keeps working until" in out
    old = run_json(capsys, config, "api-keys", "show", old_id)
    assert old["status"] == "active" and old["replaced_by"]
    assert old["expires_at"] - old["updated_at"] == pytest.approx(3600)
    for key in (old_key, new_key_):
        assert isinstance(await authenticate(settings, key), ApiKeyRecord)
    after_grace = FakeClock(old["expires_at"] + 1)
    assert refused(await authenticate(settings, old_key, after_grace))[0] == "expired_api_key"
    record = await authenticate(settings, new_key_, after_grace)
    assert isinstance(record, ApiKeyRecord) and record.id == old["replaced_by"]


@pytest.mark.anyio
async def test_rotate_without_grace_revokes_the_old_key(
    capsys: pytest.CaptureFixture[str], config: str, settings: Settings
) -> None:
    org = new_org(capsys, config)
    old_id, old_key = new_key(capsys, config, org, "--permission", "invoices.*",
                              "--ip-allow", "127.0.0.1")
    rotated = run_json(capsys, config, "api-keys", "rotate", old_id)
    assert set(rotated) == {"api_key", "key", "previous"}
    new_key_ = str(factories.remember(rotated["key"]))
    assert rotated["previous"]["status"] == "revoked"
    assert rotated["previous"]["replaced_by"] == rotated["api_key"]["id"]
    assert rotated["api_key"]["permissions"] == ["invoices.*"]
    assert rotated["api_key"]["ip_allowlist"] == ["127.0.0.1/32"]
    assert refused(await authenticate(settings, old_key))[0] == "invalid_api_key"
    assert isinstance(await authenticate(settings, new_key_), ApiKeyRecord)
    code, _, err = run(capsys, config, "api-keys", "rotate", old_id)
    assert code == 2 and "revoked" in err


@pytest.mark.anyio
async def test_revoke(capsys: pytest.CaptureFixture[str], config: str,
                      settings: Settings) -> None:
    org = new_org(capsys, config)
    key_id, key = new_key(capsys, config, org)
    assert isinstance(await authenticate(settings, key), ApiKeyRecord)
    code, out, _ = run(capsys, config, "api-keys", "revoke", key_id)
    assert code == 0 and out.strip() == f"API key {key_id} is revoked"
    assert run_json(capsys, config, "api-keys", "revoke", key_id)["status"] == "revoked"
    assert refused(await authenticate(settings, key))[0] == "invalid_api_key"
    assert run_json(capsys, config, "api-keys", "list") == []
    listed = run_json(capsys, config, "api-keys", "list", "--include-revoked")
    assert [(k["id"], k["status"]) for k in listed] == [(key_id, "revoked")]
    code, _, err = run(capsys, config, "api-keys", "update", key_id, "--name", "x")
    assert code == 2 and "revoked" in err


@pytest.mark.anyio
async def test_disabled_org_keys_are_refused(
    capsys: pytest.CaptureFixture[str], config: str, settings: Settings
) -> None:
    org = new_org(capsys, config)
    _, key = new_key(capsys, config, org)
    checker = Checker(settings)  # one long-lived server: its cache must follow the event log
    try:
        checker.runtime.start_position()
        assert isinstance(await checker.check(key), ApiKeyRecord)
        run_json(capsys, config, "orgs", "disable", org)
        checker.runtime.poll_events()
        assert refused(await checker.check(key)) == ("invalid_api_key", "organization_disabled")
        run_json(capsys, config, "orgs", "enable", org)
        checker.runtime.poll_events()
        assert isinstance(await checker.check(key), ApiKeyRecord)
    finally:
        checker.close()


@pytest.mark.parametrize(("args", "message"), [
    (("--org", "org_nope"), "authserver: no organisation org_nope"),
    (("--permission", "invoices.fly"), "authserver: permissions: 'invoices.fly'"),
    (("--ip-allow", "10.0.0.300/8"), "authserver: ip_allow: '10.0.0.300/8'"),
    (("--expires-at", "2001-01-01T00:00:00Z"), "authserver: expires_at: must be in the future"),
    (("--expires-at", "soon"), "authserver: --expires-at: 'soon'"),
    (("--expires-in", "-5"), "authserver: --expires-in: '-5'"),
    (("--rate-limit", "hourly=lots"), "authserver: rate_limits.hourly: 'lots'"),
    (("--rate-limit", "weekly=5/week"), "authserver: rate_limits: unknown kind 'weekly'"),
    (("--rate-limit", "1000/hour"), "authserver: --rate-limit: '1000/hour'"),
    (("--name", " "), "authserver: name:"),
])
def test_bad_input_is_one_line_naming_the_field(
    capsys: pytest.CaptureFixture[str], config: str, args: tuple[str, ...], message: str
) -> None:
    org = new_org(capsys, config)
    defaults = {"--org": org, "--name": "billing", "--permission": "invoices.read"}
    for option, value in defaults.items():
        if option not in args:
            args = (option, value, *args)
    code, out, err = run(capsys, config, "api-keys", "create", *args)
    assert code == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err
    assert run_json(capsys, config, "api-keys", "list", "--include-revoked") == []


def test_bad_input_to_other_commands(capsys: pytest.CaptureFixture[str], config: str) -> None:
    org = new_org(capsys, config)
    key_id, _ = new_key(capsys, config, org)
    for args, message in [
        (("update", key_id, "--permission", "invoices.fly"), "permissions: 'invoices.fly'"),
        (("update", key_id, "--ip-allow", "nonsense"), "ip_allow: 'nonsense'"),
        (("update", key_id, "--expires-at", "1000"), "expires_at: must be in the future"),
        (("update", key_id, "--rate-limit", "burst=x"), "rate_limits.burst: 'x'"),
        (("rotate", key_id, "--grace-period", "31d"), "grace_period: 0 to 2592000 seconds"),
        (("rotate", key_id, "--grace-period", "later"), "--grace-period: 'later'"),
        (("show", "key_nope"), "no API key key_nope"),
        (("revoke", "key_nope"), "no API key key_nope"),
        (("list", "--org", "org_nope"), "no organisation org_nope"),
    ]:
        code, out, err = run(capsys, config, "api-keys", *args)
        assert code == 2 and out == "", args
        assert err.startswith(f"authserver: {message}") and err.count("\n") == 1, err
    assert run_json(capsys, config, "api-keys", "show", key_id)["permissions"] == [
        "invoices.read"]


def test_every_change_is_audited(capsys: pytest.CaptureFixture[str], config: str,
                                 settings: Settings) -> None:
    org = new_org(capsys, config)
    run_json(capsys, config, "orgs", "rename", org, "--name", "Acme Ltd")
    key_id, key = new_key(capsys, config, org)
    run_json(capsys, config, "api-keys", "update", key_id, "--permission", "invoices.*")
    rotated = run_json(capsys, config, "api-keys", "rotate", key_id, "--grace-period", "60")
    new_id = rotated["api_key"]["id"]
    factories.remember(rotated["key"])
    run_json(capsys, config, "api-keys", "revoke", new_id)
    run_json(capsys, config, "api-keys", "revoke", new_id)  # a no-op writes nothing
    run_json(capsys, config, "orgs", "disable", org)
    run_json(capsys, config, "orgs", "enable", org)
    run(capsys, config, "api-keys", "create", "--org", org, "--name", "x",
        "--permission", "invoices.fly")  # refused: no entry
    me = cli_actor().name
    assert me.startswith("cli")
    assert audit_actions(settings) == [
        (me, "organization.create", org), (me, "organization.rename", org),
        (me, "api_key.create", key_id), (me, "api_key.update", key_id),
        (me, "api_key.rotate", key_id), (me, "api_key.revoke", new_id),
        (me, "organization.disable", org), (me, "organization.enable", org),
    ]
    db = Database(settings.effective_database_url)
    try:
        with db.session() as session:
            details = json.dumps([e.details for e in session.scalars(select(AuditEntry))])
    finally:
        db.dispose()
    assert key not in details and rotated["key"] not in details
    assert digest_of(settings, key_id) not in details


def test_usage_report(capsys: pytest.CaptureFixture[str], config: str,
                      settings: Settings) -> None:
    from authserver.usage import UsageCounters, record_usage

    org = new_org(capsys, config)
    key_id, _ = new_key(capsys, config, org)
    counters = UsageCounters(read_credits=1, write_credits=5)
    at = 1795478400.0  # 2026-11-24 UTC
    for action in ("read", "read", "create"):
        counters.count(key_id, org, action, at, api_key=True)
    counters.count("cli_other", "org_default", "delete", at + 86400)
    db = Database(settings.effective_database_url)
    with db.session(write=True) as session:
        record_usage(session, *counters.take())
    with db.session(write=True) as session:  # a second flush adds up
        counters.count(key_id, org, "read", at)
        record_usage(session, *counters.take())
    db.dispose()
    report = run_json(capsys, config, "usage", "--org", org)
    assert report["data"] == [{"subject": key_id, "org_id": org, "day": "2026-11-24",
                               "reads": 3, "writes": 1, "credits": 8}]
    assert report["totals"] == {org: {"reads": 3, "writes": 1, "credits": 8}}
    assert len(run_json(capsys, config, "usage", "--since", "2026-11-25")["data"]) == 1
    code, text, _ = run(capsys, config, "usage")
    assert code == 0 and key_id in text and "cli_other" in text
    code, _, err = run(capsys, config, "usage", "--since", "yesterday")
    assert code == 2 and "--since" in err
    shown = run_json(capsys, config, "api-keys", "show", key_id)
    assert shown["last_used_at"] == at


def test_client_rate_limits_from_the_cli(capsys: pytest.CaptureFixture[str],
                                         config: str) -> None:
    created = run_json(capsys, config, "clients", "create", "--name", "c", "--rate-limit",
                       "burst=10/minute")
    factories.remember(created["client_secret"])
    assert created["rate_limits"] == {"burst": "10/minute"}
    client_id = created["client_id"]
    updated = run_json(capsys, config, "clients", "update", client_id, "--rate-limit",
                       "hourly=500/hour")
    assert updated["rate_limits"] == {"hourly": "500/hour"}
    assert updated["tokens_valid_after"] == created["tokens_valid_after"]
    cleared = run_json(capsys, config, "clients", "update", client_id, "--clear-rate-limits")
    assert cleared["rate_limits"] == {}
    code, _, err = run(capsys, config, "clients", "update", client_id, "--rate-limit",
                       "hourly=lots")
    assert code == 2 and "rate_limits.hourly" in err


def test_audit_log_from_the_cli(capsys: pytest.CaptureFixture[str], config: str,
                                settings: Settings) -> None:
    """Client, organisation, key and signing-key changes are all in the audit log, readable by
    filter and page; retention purges old entries."""
    org = new_org(capsys, config)
    key_id, _ = new_key(capsys, config, org)
    created = run_json(capsys, config, "clients", "create", "--name", "c", "--org", org)
    factories.remember(created["client_secret"])
    client_id = created["client_id"]
    run_json(capsys, config, "clients", "update", client_id, "--scope", "read")
    run_json(capsys, config, "clients", "disable", client_id)
    rotated = run_json(capsys, config, "keys", "rotate")
    everything = run_json(capsys, config, "audit")["data"]
    actions = [e["action"] for e in everything]
    assert actions[:4] == ["signing_key.rotate", "client.disable", "client.update",
                           "client.create"]
    assert {"api_key.create", "organization.create"} <= set(actions)
    assert all(e["actor"].startswith("cli") for e in everything)
    assert everything[0]["target"] == rotated["kid"]
    only_client = run_json(capsys, config, "audit", "--action", "client.", "--target",
                           client_id)["data"]
    assert [e["action"] for e in only_client] == ["client.disable", "client.update",
                                                  "client.create"]
    page = run_json(capsys, config, "audit", "--limit", "2")
    assert len(page["data"]) == 2 and page["next_before"] == page["data"][-1]["id"]
    rest = run_json(capsys, config, "audit", "--before", str(page["next_before"]))["data"]
    assert [e["id"] for e in page["data"] + rest] == [e["id"] for e in everything]
    assert run_json(capsys, config, "audit", "--org", org, "--target", key_id)["data"][0][
        "action"] == "api_key.create"
    code, _, err = run(capsys, config, "audit", "--since", "last tuesday")
    assert code == 2 and "--since" in err
    runtime = build_runtime(settings)
    runtime.clock = FakeClock(runtime.clock.now() + 366 * 86400)
    assert runtime.purge_expired()[2] == len(everything)
    runtime.db.dispose()
    assert run_json(capsys, config, "audit")["data"] == []
