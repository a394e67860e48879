"""The settings tree: sources, environment naming rule, error messages, the example file."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from authserver.config import ConfigError, Settings, config_path, load_settings
from authserver.config_example import render_example

ROOT = Path(__file__).resolve().parent.parent


def test_defaults() -> None:
    settings = load_settings(env={})
    assert settings.issuer == "http://127.0.0.1:8000"
    assert settings.tokens.access_token_lifetime == 3600
    assert settings.signing.algorithm == "RS256"
    assert settings.tokens.scope_policy == "intersect"
    assert settings.effective_database_url.endswith("data/authserver.db")
    assert settings.default_audience == settings.issuer


def test_example_file_is_generated_from_the_tree() -> None:
    assert (ROOT / "config.example.toml").read_text(encoding="utf-8") == render_example()


def test_example_file_parses_to_the_defaults() -> None:
    data = tomllib.loads(render_example())
    assert Settings.model_validate(data) == Settings()


def test_environment_overrides_follow_one_naming_rule(tmp_path: Path) -> None:
    file = tmp_path / "a.toml"
    file.write_text('issuer = "https://file.example"\n[server]\nport = 9000\n')
    env = {
        "AUTHSERVER_ISSUER": "https://auth.example.com",
        "AUTHSERVER_DATABASE_URL": "postgresql://db/auth",
        "AUTHSERVER_KEYS_DIR": "/etc/authserver/keys",
        "AUTHSERVER_TOKENS__ACCESS_TOKEN_LIFETIME": "600",
        "AUTHSERVER_SERVER__TRUSTED_PROXIES": '["10.0.0.0/8"]',
        "AUTHSERVER_SIGNING__GENERATE_IF_MISSING": "false",
    }
    settings = load_settings(str(file), env=env)
    assert settings.issuer == "https://auth.example.com"
    assert settings.server.port == 9000
    assert settings.database_url == "postgresql://db/auth"
    assert settings.keys_dir == "/etc/authserver/keys"
    assert settings.tokens.access_token_lifetime == 600
    assert settings.server.trusted_proxies == ["10.0.0.0/8"]
    assert settings.signing.generate_if_missing is False


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ('[tokens]\nscope_policy = "loose"\n', {}, "tokens.scope_policy"),
        ("[tokens]\naccess_token_lifetime = 5\n", {}, "tokens.access_token_lifetime"),
        ('issuer = "ftp://x"\n', {}, "issuer"),
        ('issuer = "https://x.example/path"\n', {}, "issuer"),
        ("[server]\nbogus = 1\n", {}, "server.bogus: unknown setting"),
        ('[server]\ntrusted_proxies = ["nope"]\n', {}, "server.trusted_proxies"),
        ("[signing]\njwks_max_age = 900\n", {}, "propagation_delay"),
        ('[signing]\nalgorithm = "HS256"\n', {}, "signing.algorithm"),
        ("", {"AUTHSERVER_SERVER__PORT": "http"}, "server.port"),
        ("", {"AUTHSERVER_SERVER__TRUSTED_PROXIES": "[not json"}, "TRUSTED_PROXIES"),
        ("= broken", {}, "not valid TOML"),
    ],
)
def test_errors_name_the_setting(tmp_path: Path, toml: str, env: dict[str, str],
                                 message: str) -> None:
    file = tmp_path / "c.toml"
    file.write_text(toml)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_settings(str(file), env=env)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(str(tmp_path / "nope.toml"), env={})


def test_file_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert config_path(None, {}) is None
    (tmp_path / "authserver.toml").write_text("")
    assert config_path(None, {}) == Path("authserver.toml")
    assert config_path(None, {"AUTHSERVER_CONFIG": "/x.toml"}) == Path("/x.toml")
    assert config_path("/y.toml", {"AUTHSERVER_CONFIG": "/x.toml"}) == Path("/y.toml")
