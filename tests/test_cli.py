"""The `authserver` command, run in-process against a temporary configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from authserver.cli import main
from tests import factories


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "authserver.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "data"}"\nkeys_dir = "{tmp_path / "keys"}"\n'
        '[[scopes]]\nname = "portal-provision"\napi_key_only = true\n'
    )
    return str(path)


def run(capsys: pytest.CaptureFixture[str], config: str, *args: str) -> tuple[int, str, str]:
    code = main(["--config", config, *args])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], config: str, *args: str) -> object:
    code = main(["--config", config, "--json", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_client_lifecycle(capsys: pytest.CaptureFixture[str], config: str) -> None:
    created = run_json(capsys, config, "clients", "create", "--name", "billing",
                       "--scope", "invoices.read invoices.write", "--ip-allow", "10.0.0.0/8",
                       "--resource", "https://api.example.com")
    assert isinstance(created, dict)
    secret = factories.remember(created["client_secret"])
    assert secret and secret.startswith("ascs_")
    cid = created["client_id"]
    assert created["scope"] == "invoices.read invoices.write"
    shown = run_json(capsys, config, "clients", "show", cid)
    assert isinstance(shown, dict)
    assert "client_secret" not in shown and secret not in json.dumps(shown)
    updated = run_json(capsys, config, "clients", "update", cid, "--scope", "invoices.read",
                       "--clear-ip-allow")
    assert isinstance(updated, dict)
    assert updated["scope"] == "invoices.read" and updated["ip_allow"] == []
    assert updated["tokens_valid_after"] > 0
    listed = run_json(capsys, config, "clients", "list")
    assert isinstance(listed, list) and [c["client_id"] for c in listed] == [cid]
    disabled = run_json(capsys, config, "clients", "disable", cid)
    assert isinstance(disabled, dict) and disabled["status"] == "disabled"
    rotated = run_json(capsys, config, "clients", "rotate-secret", cid)
    assert isinstance(rotated, dict)
    assert factories.remember(rotated["client_secret"]) != secret
    run_json(capsys, config, "clients", "delete", cid)
    code, _, err = run(capsys, config, "clients", "show", cid)
    assert code == 2 and "no client" in err


def test_text_output_shows_the_secret_once(capsys: pytest.CaptureFixture[str],
                                           config: str) -> None:
    code, out, _ = run(capsys, config, "clients", "create", "--name", "x")
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith("client_secret"))
    factories.remember(line.split()[-1])
    assert "shown only now" in out


def test_bad_input_is_a_clear_error(capsys: pytest.CaptureFixture[str], config: str) -> None:
    code, _, err = run(capsys, config, "clients", "create", "--name", "x",
                       "--scope", "portal-provision")
    assert code == 2 and "API-key only" in err
    code, _, err = run(capsys, config, "clients", "create", "--name", "x",
                       "--ip-allow", "nonsense")
    assert code == 2 and "ip_allow" in err


def test_config_errors_name_the_setting(capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[tokens]\nscope_policy = "nope"\n')
    code, _, err = run(capsys, str(bad), "clients", "list")
    assert code == 2 and "tokens.scope_policy" in err


def test_keys_commands(capsys: pytest.CaptureFixture[str], config: str) -> None:
    code, out, _ = run(capsys, config, "keys", "list")
    assert code == 0 and "no keys" in out
    first = run_json(capsys, config, "keys", "rotate")  # no signer yet: signs at once
    assert isinstance(first, dict)
    standby = run_json(capsys, config, "keys", "generate", "--alg", "ES256")
    assert isinstance(standby, dict)
    listed = run_json(capsys, config, "keys", "list")
    assert isinstance(listed, list)
    assert {k["kid"]: k["state"] for k in listed} == {first["kid"]: "active",
                                                     standby["kid"]: "published"}
    code, _, err = run(capsys, config, "keys", "retire", "--", first["kid"])
    assert code == 2 and "rotate" in err
    # a kid may begin with "-" (base64url): `--kid=KID` and `-- KID` always work
    promoted = run_json(capsys, config, "keys", "rotate", f"--kid={standby['kid']}")
    assert isinstance(promoted, dict) and promoted["activate_at"] > 0
    retired = run_json(capsys, config, "keys", "retire", "--", standby["kid"])
    assert isinstance(retired, dict) and retired["retired_at"] > 0


def test_config_example_command(capsys: pytest.CaptureFixture[str], config: str) -> None:
    code, out, _ = run(capsys, config, "config", "example")
    assert code == 0
    root = Path(__file__).resolve().parent.parent
    assert out == (root / "config.example.toml").read_text()


def test_public_client_for_the_code_flow(capsys: pytest.CaptureFixture[str],
                                         config: str) -> None:
    created = run_json(capsys, config, "clients", "create", "--name", "desk agent",
                       "--auth-method", "none", "--grant-type", "authorization_code",
                       "--grant-type", "refresh_token",
                       "--redirect-uri", "http://127.0.0.1/callback")
    assert isinstance(created, dict)
    assert created["client_secret"] is None
    assert created["token_endpoint_auth_method"] == "none"
    assert created["grant_types"] == ["authorization_code", "refresh_token"]
    assert created["redirect_uris"] == ["http://127.0.0.1/callback"]
    # Without a redirect URI, or public with client_credentials: refused, nothing made.
    code, _, err = run(capsys, config, "clients", "create", "--name", "x",
                       "--grant-type", "authorization_code")
    assert code != 0 and "redirect_uris" in err
    code, _, err = run(capsys, config, "clients", "create", "--name", "y",
                       "--auth-method", "none")
    assert code != 0 and "token_endpoint_auth_method" in err
