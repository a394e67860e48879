"""The relational schema. Times are Unix seconds (float), portable across SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

DEFAULT_ORG_ID = "org_default"


class Base(DeclarativeBase):
    pass


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[float] = mapped_column(Float)


class Client(Base):
    __tablename__ = "clients"

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    # SHA-256 hex digest of the secret; the secret itself is never stored.
    secret_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    auth_method: Mapped[str] = mapped_column(String(32))
    grant_types: Mapped[list[str]] = mapped_column(JSON)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    ip_allow: Mapped[list[str]] = mapped_column(JSON)
    resources: Mapped[list[str]] = mapped_column(JSON)
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    jwks_uri: Mapped[str | None] = mapped_column(String(2000), default=None)
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    # Tokens issued before this instant are dead (revocation cutoff; see docs/architecture.md).
    tokens_valid_after: Mapped[float] = mapped_column(Float, default=0.0)
    # "admin" (CLI, admin API) or "dcr" (RFC 7591 self-registration).
    origin: Mapped[str] = mapped_column(String(16), default="admin", index=True)
    # Written in batches from memory (never on the token path); None until the first token.
    last_used_at: Mapped[float | None] = mapped_column(Float, default=None)
    # This client's own rate limits ({"hourly": ..., "burst": ...}) over `[rate_limits]`.
    rate_limits: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # Exact redirect URIs of the authorization code flow (RFC 6749 §3.1.2, OAuth 2.1 §2.3.1).
    redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    registration: Mapped[ClientRegistration | None] = relationship(
        back_populates="client", cascade="all, delete-orphan", passive_deletes=True,
    )


class ClientRegistration(Base):
    """How a self-registered client came to be, and what RFC 7592 management needs."""

    __tablename__ = "client_registrations"

    client_id: Mapped[str] = mapped_column(
        ForeignKey("clients.client_id", ondelete="CASCADE"), primary_key=True
    )
    # "open" or "initial_access_token": the policy the client registered under.
    via: Mapped[str] = mapped_column(String(32))
    initial_access_token_id: Mapped[str | None] = mapped_column(String(32), default=None)
    source_address: Mapped[str | None] = mapped_column(String(64), default=None)
    software_id: Mapped[str | None] = mapped_column(String(200), default=None)
    software_version: Mapped[str | None] = mapped_column(String(200), default=None)
    # The RFC 7591 metadata as accepted (never a secret).
    client_metadata: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The most scope this registration may ever hold (the policy's ceiling at registration).
    scope_ceiling: Mapped[list[str]] = mapped_column(JSON)
    token_digest: Mapped[str] = mapped_column(String(64))
    # Digest of origin + metadata; set while identical re-registration may return this client.
    idempotency_key: Mapped[str | None] = mapped_column(String(64), default=None, unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    client: Mapped[Client] = relationship(back_populates="registration")


class InitialAccessToken(Base):
    """RFC 7591 §3 initial access tokens, stored as digests."""

    __tablename__ = "initial_access_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(200), default="")
    scopes: Mapped[list[str]] = mapped_column(JSON)
    max_uses: Mapped[int | None] = mapped_column(Integer, default=None)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[float | None] = mapped_column(Float, default=None)
    revoked_at: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[float] = mapped_column(Float)


class Event(Base):
    """Append-only change log: caches, instances and resource servers follow it."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_created_at", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[float] = mapped_column(Float)
    type: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(200), index=True)
    org_id: Mapped[str | None] = mapped_column(String(64), default=None)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class RevokedToken(Base):
    """RFC 7009 revocations: the deny-list, one row per `jti` until the token's `exp`."""

    __tablename__ = "revoked_tokens"
    __table_args__ = (Index("ix_revoked_tokens_exp", "exp"),)

    jti: Mapped[str] = mapped_column(String(128), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    exp: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float] = mapped_column(Float)


class SetReceiver(Base):
    """RFC 8936 poll delivery state of one receiver: a client holding the feed scope, and the
    receiver name it polls under (one per resource-server process).

    Every deliverable event with an id at or below `cursor` is acknowledged; `acked` holds the
    acknowledged ids above it; `sent_through` is the highest id ever sent to it."""

    __tablename__ = "set_receivers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128), index=True)
    cursor: Mapped[int] = mapped_column(Integer)
    sent_through: Mapped[int] = mapped_column(Integer)
    acked: Mapped[list[int]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)
    polled_at: Mapped[float] = mapped_column(Float)


class ApiKey(Base):
    """An integrator's API key: the key is `<prefix>_<environment>_<lookup><secret><check>`;
    only `lookup` (as the id) and the SHA-256 digest of the whole key are stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    environment: Mapped[str] = mapped_column(String(8))
    permissions: Mapped[list[str]] = mapped_column(JSON)
    ip_allow: Mapped[list[str]] = mapped_column(JSON)
    expires_at: Mapped[float | None] = mapped_column(Float, default=None)
    # Rate limits of this key, overriding `[api_keys]` defaults ("1000/hour" style strings).
    rate_limits: Mapped[dict[str, str]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, default=None)
    # Set on the old key by a rotation: the key that replaced it.
    replaced_by: Mapped[str | None] = mapped_column(String(32), default=None)
    # Written in batches from memory (never per request).
    last_used_at: Mapped[float | None] = mapped_column(Float, default=None)


class AuditEntry(Base):
    """Who did what to what, with which outcome; written in the transaction of the change."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(200), index=True)
    org_id: Mapped[str | None] = mapped_column(String(64), default=None)
    outcome: Mapped[str] = mapped_column(String(16))
    source: Mapped[str | None] = mapped_column(String(64), default=None)
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)


class UsageCounter(Base):
    """Requests per subject (an API key or a client) and day, by kind, with credits."""

    __tablename__ = "usage_counters"

    subject: Mapped[str] = mapped_column(String(128), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64), index=True)
    reads: Mapped[int] = mapped_column(Integer, default=0)
    writes: Mapped[int] = mapped_column(Integer, default=0)
    credits: Mapped[int] = mapped_column(Integer, default=0)


class User(Base):
    """A person: an operator of the admin UI (role admin) or a user of the interactive flows
    (role user). The password is kept as an argon2id hash only."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    username: Mapped[str] = mapped_column(String(200), unique=True)
    email: Mapped[str | None] = mapped_column(String(320), default=None)
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    # Failed logins in a row, and until when logins are refused (backoff).
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[float | None] = mapped_column(Float, default=None)
    last_login_at: Mapped[float | None] = mapped_column(Float, default=None)
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    # The person's tokens issued before this instant are dead (set when disabled or on demand).
    tokens_valid_after: Mapped[float] = mapped_column(Float, default=0.0)


class WebSession(Base):
    """A signed-in person's browser session. Only the SHA-256 of the cookie value is kept."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    source: Mapped[str | None] = mapped_column(String(64), default=None)


class ApprovalRequest(Base):
    """A gated admin action waiting for (or past) the approval of other admins. `payload` holds
    the action's validated arguments, never a secret: an API key is made only at its reveal."""

    __tablename__ = "approval_requests"
    __table_args__ = (Index("ix_approval_requests_created_at", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    action: Mapped[str] = mapped_column(String(64))
    org_id: Mapped[str] = mapped_column(String(64), index=True)
    # What the action acts on: the organisation or client to delete, the new key's name.
    target: Mapped[str] = mapped_column(String(200))
    requested_by: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    # pending → approved (keys, until revealed) → executed; or rejected. Expiry is derived from
    # expires_at (pending or approved past it).
    state: Mapped[str] = mapped_column(String(16), index=True)
    required_approvals: Mapped[int] = mapped_column(Integer)
    # [{"by": actor, "at": time}, ...] in order.
    approvals: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # {"by": actor, "at": time, "reason": text} once rejected.
    rejection: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    decided_at: Mapped[float | None] = mapped_column(Float, default=None)
    executed_at: Mapped[float | None] = mapped_column(Float, default=None)
    # What the execution made or removed (the new key's id, the deleted object's id).
    result: Mapped[str | None] = mapped_column(String(200), default=None)


class Consent(Base):
    """What a person allowed a client (by client_id: a registered id or a metadata-document
    URL). Revoking keeps the row, with its cutoff, so the person's tokens for it stay dead."""

    __tablename__ = "consents"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)
    client_id: Mapped[str] = mapped_column(String(2000), primary_key=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    granted_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float, default=None)
    revoked_at: Mapped[float | None] = mapped_column(Float, default=None)
    # Tokens for this person and client issued before this instant are dead.
    tokens_valid_after: Mapped[float] = mapped_column(Float, default=0.0)


class AuthorizationCode(Base):
    """An RFC 6749 §4.1.2 code, by the SHA-256 of its value; single use. What its exchange
    issued is kept so that a second use can revoke it (OAuth 2.1 §4.1.3)."""

    __tablename__ = "authorization_codes"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(2000))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    redirect_uri: Mapped[str] = mapped_column(String(2000))
    code_challenge: Mapped[str] = mapped_column(String(128))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    resources: Mapped[list[str]] = mapped_column(JSON)
    nonce: Mapped[str | None] = mapped_column(String(512), default=None)
    auth_time: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    used_at: Mapped[float | None] = mapped_column(Float, default=None)
    access_jti: Mapped[str | None] = mapped_column(String(64), default=None)
    access_exp: Mapped[float | None] = mapped_column(Float, default=None)
    refresh_family: Mapped[str | None] = mapped_column(String(32), default=None)


class RefreshToken(Base):
    """A refresh token, by the SHA-256 of its value. Tokens rotated from one code share a
    family; reuse of a rotated one revokes the family (OAuth 2.1 §4.3.1)."""

    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[str] = mapped_column(String(32), index=True)
    client_id: Mapped[str] = mapped_column(String(2000))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    resources: Mapped[list[str]] = mapped_column(JSON)
    auth_time: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    used_at: Mapped[float | None] = mapped_column(Float, default=None)
    revoked_at: Mapped[float | None] = mapped_column(Float, default=None)
    # The access token issued with this refresh token, so revoking the family reaches it.
    access_jti: Mapped[str | None] = mapped_column(String(64), default=None)
    access_exp: Mapped[float | None] = mapped_column(Float, default=None)
