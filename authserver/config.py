"""One frozen settings tree, loaded from TOML and the environment.

Where settings come from, first match wins for the file: ``--config PATH``, ``$AUTHSERVER_CONFIG``,
``./authserver.toml``, else built-in defaults. Every leaf can then be overridden by an environment
variable named ``AUTHSERVER_`` + the setting's path in upper case with ``__`` between levels:
``issuer`` → ``AUTHSERVER_ISSUER``, ``server.port`` → ``AUTHSERVER_SERVER__PORT``. Lists and
tables are given as JSON in the environment.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from authserver.uris import is_resource_uri

ENV_PREFIX = "AUTHSERVER_"
SigningAlgorithm = Literal["RS256", "ES256", "EdDSA", "PS256"]
ScopePolicy = Literal["intersect", "strict", "client"]


class ConfigError(Exception):
    """A setting is missing, malformed or out of range; the message names its path."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServerSettings(_Section):
    host: str = Field("127.0.0.1", description="Address `authserver serve` listens on.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port `authserver serve` listens on.")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="CIDRs of reverse proxies whose X-Forwarded-For is believed.",
    )
    max_body_bytes: int = Field(
        65536, ge=1024, description="Largest request body accepted; larger bodies get 413."
    )
    workers: int = Field(
        1, ge=1, le=256,
        description="Worker processes of `authserver serve` (--workers); each has its own "
        "caches and follows the event log.",
    )
    shutdown_timeout: int = Field(
        30, ge=0, le=3600,
        description="Seconds `serve` waits for in-flight requests after SIGTERM before it "
        "closes them.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not a CIDR such as 10.0.0.0/8") from exc
        return value


class TokenSettings(_Section):
    access_token_lifetime: int = Field(
        3600, ge=60, le=86400, description="Lifetime of access tokens in seconds (exp - iat)."
    )
    default_audience: str = Field(
        "",
        description="`aud` of tokens requested without `resource`; empty means the issuer URL.",
    )
    scope_policy: ScopePolicy = Field(
        "intersect",
        description="How a requested scope is matched: intersect, strict or client (DESIGN.md).",
    )
    max_assertion_lifetime: int = Field(
        300, ge=10, le=3600, description="Longest private_key_jwt assertion accepted (exp - now)."
    )
    clock_skew: int = Field(
        30, ge=0, le=300, description="Seconds of clock skew tolerated on client assertions."
    )


class SigningSettings(_Section):
    algorithm: SigningAlgorithm = Field(
        "RS256", description="Algorithm of new signing keys: RS256, ES256, EdDSA or PS256."
    )
    jwks_max_age: int = Field(
        300, ge=0, le=86400, description="Cache-Control max-age of the JWKS response in seconds."
    )
    propagation_delay: int = Field(
        600,
        ge=0,
        description="Seconds a rotated key is published before it signs (>= max-age + reload).",
    )
    reload_interval: float = Field(
        2.0, gt=0, le=60, description="Seconds between checks of the keys directory for changes."
    )
    generate_if_missing: bool = Field(
        True, description="Generate a development key on start when the keys directory is empty."
    )

    @model_validator(mode="after")
    def _propagation(self) -> SigningSettings:
        if self.propagation_delay < self.jwks_max_age + self.reload_interval:
            raise ValueError(
                "propagation_delay must be >= jwks_max_age + reload_interval, or verifiers "
                "holding a cached JWKS would see tokens signed by a key they do not know"
            )
        return self


class CacheSettings(_Section):
    last_used_flush_interval: float = Field(
        60.0, gt=0, le=3600,
        description="Seconds between writes of clients' last-use times (kept in memory between).",
    )
    event_poll_interval: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Seconds between polls of the event log; bounds how stale a cached client is.",
    )
    max_staleness: float = Field(
        10.0,
        gt=0,
        description="When the event log cannot be read for this long, cached clients are dropped.",
    )
    fanout: Literal["auto", "redis", "postgres", "off"] = Field(
        "auto",
        description="Wake-up of every instance's event follower on a change: redis (pub/sub on "
        "redis_url), postgres (LISTEN/NOTIFY), off (polling only); auto: redis when redis_url "
        "is set, else off.",
    )
    fanout_channel: str = Field(
        "authserver_events", pattern=r"^[a-z][a-z0-9_]{0,62}$",
        description="Redis channel / PostgreSQL NOTIFY channel of the fan-out; one per "
        "deployment sharing a Redis or database.",
    )


class DatabaseSettings(_Section):
    """Connection pool and timeouts of the store (PostgreSQL; SQLite uses what applies)."""

    pool_size: int = Field(
        10, ge=1, le=1000, description="Connections kept open per process (PostgreSQL)."
    )
    max_overflow: int = Field(
        10, ge=0, le=1000, description="Extra connections opened under load beyond pool_size."
    )
    pool_timeout: float = Field(
        5.0, gt=0, le=300,
        description="Seconds a request waits for a free connection before it answers 503.",
    )
    pool_recycle: float = Field(
        1800.0, ge=0,
        description="Seconds after which a pooled connection is replaced (0: never).",
    )
    connect_timeout: int = Field(
        5, ge=1, le=300, description="Seconds a new connection may take to open (PostgreSQL)."
    )
    statement_timeout: int = Field(
        10000, ge=0,
        description="Milliseconds one SQL statement may run before PostgreSQL cancels it "
        "(0: no limit); a cancelled statement answers 503.",
    )
    retry_attempts: int = Field(
        3, ge=1, le=20,
        description="Runs of a retryable transaction hit by a serialization failure or "
        "deadlock (SQLSTATE 40001/40P01) before it answers 503.",
    )


class OutboundSettings(_Section):
    allow_loopback_http: bool = Field(
        False,
        description="Development only: allow http:// and loopback addresses for jwks_uri fetches.",
    )
    timeout: float = Field(5.0, gt=0, le=60, description="Seconds before an outbound fetch fails.")
    max_bytes: int = Field(
        65536, ge=1024, description="Largest outbound response body (a client's JWKS) accepted."
    )
    min_cache_seconds: int = Field(
        60, ge=0, description="Shortest time a fetched document is cached, whatever it says."
    )
    max_cache_seconds: int = Field(
        3600, ge=0, description="Longest time a fetched document is cached, whatever it says."
    )


class ResourceServer(_Section):
    identifier: str = Field(description="The resource's URI; tokens for it carry it as `aud`.")
    scopes: list[str] = Field(
        default_factory=list, description="Scopes this resource accepts; empty means any."
    )

    @field_validator("identifier")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not is_resource_uri(value):
            raise ValueError("must be an absolute http(s) URI without a fragment (RFC 8707 §2)")
        return value


class ScopeDefinition(_Section):
    name: str = Field(description="The scope token.")
    description: str = Field("", description="What the scope allows, shown to people.")
    api_key_only: bool = Field(
        False, description="Never granted to an OAuth or DCR client, only to API keys."
    )


RegistrationPolicy = Literal["open", "initial_access_token", "closed"]
_RATE = re.compile(r"^\s*\d+\s*(/|per)\s*(\d+\s*)?(second|minute|hour|day)s?\s*$")


class RegistrationSettings(_Section):
    policy: RegistrationPolicy = Field(
        "open",
        description="RFC 7591 registration: open, initial_access_token (Bearer token required) "
        "or closed (endpoints not mounted).",
    )
    open_scopes: list[str] = Field(
        default_factory=list,
        description="Scopes a client registered without an initial access token may hold.",
    )
    rate_limit: str = Field(
        "20/hour",
        description='Open registrations per source address, e.g. "20/hour" or "5/minute;50/day".',
    )
    idempotency_window: int = Field(
        86400, ge=0,
        description="Seconds an identical re-registration returns the existing client (0: off).",
    )
    reap_unused_after: int = Field(
        86400, ge=0,
        description="Reap self-registered clients that never got a token after this many "
        "seconds (0: never).",
    )
    reap_idle_after: int = Field(
        2592000, ge=0,
        description="Reap self-registered clients unused for this many seconds (0: never).",
    )
    reap_interval: float = Field(
        3600.0, gt=0, description="Seconds between runs of the reaper inside `serve`."
    )

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        return _check_rate(value)


def _check_rate(value: str) -> str:
    if not all(_RATE.match(part) for part in value.split(";")):
        raise ValueError('must look like "1000/hour" or "5/minute;50/day"')
    return value


class ApiKeySettings(_Section):
    prefix: str = Field(
        "as", pattern=r"^[a-z][a-z0-9]{0,15}$",
        description="Keys look like <prefix>_live_... and <prefix>_test_...",
    )
    allow_query_parameter: bool = Field(
        True,
        description="Accept ?x-api-key= (logged redacted, answered with a deprecation warning).",
    )


class AdminUiSettings(_Section):
    session_lifetime: int = Field(
        28800, ge=300, le=30 * 86400,
        description="Seconds a sign-in to the admin UI lasts.",
    )


class AuditSettings(_Section):
    retention_days: int = Field(
        365, ge=1, le=36500, description="Days the audit log keeps an entry (purged hourly)."
    )


ApprovalAction = Literal["api_key.create", "api_key.create.privileged", "organization.delete",
                         "client.delete"]


def _default_gated() -> list[ApprovalAction]:
    return ["api_key.create.privileged", "organization.delete"]


class ApprovalSettings(_Section):
    """Quorum approval of sensitive admin actions (docs/approvals.md)."""

    required: int = Field(
        0, ge=0, le=10,
        description="Admins other than the requester who must approve a gated action (0: off).",
    )
    actions: list[ApprovalAction] = Field(
        default_factory=_default_gated,
        description="Gated actions: api_key.create (every key), api_key.create.privileged (a "
        "key with *, or an api_key_only scope, made or raised to it), organization.delete, "
        "client.delete.",
    )
    request_lifetime: int = Field(
        7 * 86400, ge=300, le=90 * 86400,
        description="Seconds a request may wait for its approvals (and an approved key for "
        "its reveal) before it expires.",
    )

    def gates(self, action: str) -> bool:
        return self.required > 0 and action in self.actions


class AuthorizationSettings(_Section):
    """People's flows: authorization code + PKCE behind login and consent, refresh tokens and
    OpenID Connect (docs/authorization.md)."""

    enabled: bool = Field(
        True, description="Serve the authorization endpoint, login and consent pages, userinfo "
        "and the authorization_code and refresh_token grants (off: none of it is mounted or "
        "advertised).",
    )
    code_lifetime: int = Field(
        60, ge=10, le=600, description="Seconds an authorization code can be exchanged.",
    )
    refresh_token_lifetime: int = Field(
        30 * 86400, ge=0, le=365 * 86400,
        description="Seconds a refresh-token family lives from the login that began it (0: no "
        "refresh tokens are issued).",
    )
    rotate_confidential: bool = Field(
        False, description="Rotate refresh tokens of confidential clients too (public clients' "
        "are always rotated, with reuse detection).",
    )
    id_token_lifetime: int = Field(
        3600, ge=60, le=86400, description="Seconds an OpenID Connect ID token is valid.",
    )
    consent_lifetime: int = Field(
        0, ge=0, le=3650 * 86400,
        description="Seconds a remembered consent lasts (0: until the person revokes it).",
    )
    default_scopes: list[str] = Field(
        default_factory=lambda: ["openid"],
        description="Scopes granted when an authorization request names none, within what "
        "the client may have.",
    )


class CimdSettings(_Section):
    """Client ID Metadata Documents: an https URL as client_id (docs/cimd.md)."""

    enabled: bool = Field(
        True, description="Accept an https URL as client_id and fetch its metadata document.",
    )
    allow_domains: list[str] = Field(
        default_factory=list,
        description="Hosts whose documents are accepted (a leading \"*.\" covers subdomains; "
        "empty: every host not denied).",
    )
    deny_domains: list[str] = Field(
        default_factory=list, description="Hosts whose documents are refused (wins over allow).",
    )
    allow_loopback: bool = Field(
        False, description="Development and tests only: accept http:// and loopback addresses "
        "for metadata documents.",
    )
    max_bytes: int = Field(
        5120, ge=512, le=1_048_576, description="Largest metadata document accepted, in bytes.",
    )
    min_cache_seconds: int = Field(
        60, ge=0, le=86400, description="A document is cached at least this long.",
    )
    max_cache_seconds: int = Field(
        86400, ge=60, le=30 * 86400, description="A document is cached at most this long.",
    )
    scopes: list[str] = Field(
        default_factory=lambda: ["openid", "profile", "email", "offline_access"],
        description="Scopes a metadata-document client may be granted (with the person's "
        "consent).",
    )
    organization: str = Field(
        "org_default", description="The organisation metadata-document clients belong to.",
    )


class ForwardAuthSettings(_Section):
    audiences: list[str] = Field(
        default_factory=list,
        description="Access tokens at forward-auth must name one of these in aud (empty: any "
        "token of this issuer, whatever API it was issued for).",
    )


class RateLimitSettings(_Section):
    """Defaults; a key's own `rate_limits` override the per-key pair."""

    api_key_hourly: str = Field("10000/hour", description="Requests per API key per hour.")
    api_key_burst: str = Field("600/minute", description="Requests per API key per minute.")
    client_hourly: str = Field(
        "10000/hour", description="Requests per OAuth client per hour (token, forward-auth)."
    )
    client_burst: str = Field("600/minute", description="Requests per OAuth client per minute.")
    organization_hourly: str = Field(
        "100000/hour", description="Requests per organisation per hour, all its keys and clients."
    )
    address: str = Field(
        "1200/minute", description="Requests per source address to the token endpoint."
    )
    read_credits: int = Field(1, ge=0, description="Usage credits a read request costs.")
    write_credits: int = Field(5, ge=0, description="Usage credits a write request costs.")

    @field_validator("api_key_hourly", "api_key_burst", "client_hourly", "client_burst",
                     "organization_hourly", "address")
    @classmethod
    def _rate(cls, value: str) -> str:
        return _check_rate(value)


class FeedSettings(_Section):
    scope: str = Field(
        "revocation-feed",
        description="Scope a client (or its access token) needs to poll the revocation feed.",
    )
    long_poll_timeout: float = Field(
        25.0, ge=0, le=120,
        description="Seconds a poll without returnImmediately waits for events (RFC 8936).",
    )
    max_events: int = Field(
        100, ge=1, le=1000, description="SETs per poll response when the receiver names none."
    )
    max_long_polls: int = Field(
        1000, ge=0, le=100_000,
        description="Long polls waiting at once (one per receiver); past it, polls answer at once.",
    )


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level of the authserver loggers."
    )
    format: Literal["text", "json"] = Field(
        "text", description="Log lines as text (for a terminal) or JSON objects with the "
        "request id (for a log pipeline); `serve` applies it to uvicorn's loggers too.",
    )


class MetricsSettings(_Section):
    """Prometheus `/metrics` (docs/observability.md)."""

    enabled: bool = Field(True, description="Serve Prometheus metrics at /metrics.")
    allow_from: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="CIDRs whose requests may read /metrics without a token (the client "
        "address, after server.trusted_proxies).",
    )
    bearer_token_sha256: str = Field(
        "", description="Hex SHA-256 of a bearer token that may read /metrics from any "
        "address (empty: none).",
    )
    client_labels: int = Field(
        100, ge=0, le=10_000,
        description="Clients given their own client_id label in "
        "authserver_tokens_issued_total, per process (the first seen); the rest count as "
        "\"other\".",
    )

    @field_validator("allow_from")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not a CIDR") from exc
        return value

    @field_validator("bearer_token_sha256")
    @classmethod
    def _digest(cls, value: str) -> str:
        if value and not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ValueError("must be 64 lowercase hex digits (the SHA-256 of the token)")
        return value


class Settings(_Section):
    issuer: str = Field(
        "http://127.0.0.1:8000",
        description="Public base URL; discovery's `issuer` is exactly this string.",
    )
    data_dir: str = Field("data", description="Directory of the embedded SQLite database.")
    database_url: str = Field(
        "", description="SQLAlchemy URL; empty means sqlite:///<data_dir>/authserver.db."
    )
    keys_dir: str = Field("keys", description="Directory of the private signing keys (JWK files).")
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    tokens: TokenSettings = Field(default_factory=TokenSettings)
    signing: SigningSettings = Field(default_factory=SigningSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    outbound: OutboundSettings = Field(default_factory=OutboundSettings)
    registration: RegistrationSettings = Field(default_factory=RegistrationSettings)
    feed: FeedSettings = Field(default_factory=FeedSettings)
    api_keys: ApiKeySettings = Field(default_factory=ApiKeySettings)
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)
    forward_auth: ForwardAuthSettings = Field(default_factory=ForwardAuthSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    admin_ui: AdminUiSettings = Field(default_factory=AdminUiSettings)
    approvals: ApprovalSettings = Field(default_factory=ApprovalSettings)
    authorization: AuthorizationSettings = Field(default_factory=AuthorizationSettings)
    cimd: CimdSettings = Field(default_factory=CimdSettings)
    redis_url: str = Field(
        "", description="Redis for shared rate-limit counters and the event fan-out "
        "(AUTHSERVER_REDIS_URL); empty: counters in process memory, polling only.",
    )
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    resources: list[ResourceServer] = Field(
        default_factory=list,
        description="Resource servers clients may name with RFC 8707 `resource`.",
    )
    scopes: list[ScopeDefinition] = Field(
        default_factory=list, description="The scope catalog: descriptions and api_key_only flags."
    )

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL such as https://auth.example.com")
        if parts.query or parts.fragment or parts.path not in ("",):
            raise ValueError("must have no path, query or fragment (RFC 8414 §2)")
        return value

    @model_validator(mode="after")
    def _reaping(self) -> Settings:
        reg = self.registration
        floor = 2 * self.cache.last_used_flush_interval
        for name, value in (("reap_unused_after", reg.reap_unused_after),
                            ("reap_idle_after", reg.reap_idle_after)):
            if 0 < value < floor:
                raise ValueError(
                    f"registration.{name} must be 0 or at least twice "
                    "cache.last_used_flush_interval, or clients in use could be reaped"
                )
        return self

    @model_validator(mode="after")
    def _fanout(self) -> Settings:
        if self.cache.fanout == "redis" and not self.redis_url:
            raise ValueError('cache.fanout = "redis" needs redis_url')
        if self.cache.fanout == "postgres" and not self.database_url.startswith("postgresql"):
            raise ValueError('cache.fanout = "postgres" needs a PostgreSQL database_url')
        return self

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.data_dir) / 'authserver.db'}"

    @property
    def default_audience(self) -> str:
        return self.tokens.default_audience or self.issuer

    def endpoint(self, path: str) -> str:
        """The public URL of one of our endpoints."""
        return self.issuer + path


def _parse_env_value(raw: str, annotation: Any) -> Any:
    if annotation is str:
        return raw
    if raw[:1] in "[{":
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"invalid JSON in environment: {exc.msg}") from exc
    return raw


def _env_overrides(model: type[BaseModel], env: Mapping[str, str], path: tuple[str, ...]) -> dict[
    str, Any
]:
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        key = ENV_PREFIX + "__".join((*path, name)).upper()
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested = _env_overrides(annotation, env, (*path, name))
            if nested:
                out[name] = nested
        elif key in env:
            try:
                out[name] = _parse_env_value(env[key], annotation)
            except ConfigError as exc:
                raise ConfigError(f"{key}: {exc}") from exc
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown setting"
        lines.append(f"{loc}: {message}")
    return f"invalid configuration ({source}):\n  " + "\n  ".join(lines)


def config_path(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    """Which file to read: --config, then $AUTHSERVER_CONFIG, then ./authserver.toml."""
    if explicit:
        return Path(explicit)
    if env.get("AUTHSERVER_CONFIG"):
        return Path(env["AUTHSERVER_CONFIG"])
    default = Path("authserver.toml")
    return default if default.exists() else None


def load_settings(
    path: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings tree; raises ConfigError naming the offending path."""
    env = os.environ if env is None else env
    file = config_path(path, env)
    data: dict[str, Any] = {}
    source = "defaults"
    if file is not None:
        source = str(file)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"configuration file {file} does not exist") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    data = _merge(data, _env_overrides(Settings, env, ()))
    if overrides:
        data = _merge(data, dict(overrides))
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source + " + environment")) from exc
