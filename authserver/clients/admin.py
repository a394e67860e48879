"""Client administration: every change writes its event in the same transaction.

Used by the CLI now and by the admin API and registration later; callers own the session.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from authserver import audit, events, hashing
from authserver.clients.records import (
    AUTH_METHODS,
    SECRET_METHODS,
    AuthMethod,
    ClientRecord,
    check_cidrs,
    check_jwks,
    check_jwks_uri,
    check_redirect_uris,
    check_resources,
)
from authserver.errors import Invalid, NotFound
from authserver.ratelimit import check_overrides
from authserver.scopes import ScopeCatalog
from authserver.storage.models import DEFAULT_ORG_ID, Client, Organization


@dataclass(frozen=True, slots=True)
class ClientSpec:
    name: str
    scopes: tuple[str, ...] = ()
    ip_allow: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    auth_method: AuthMethod = "client_secret_basic"
    jwks: dict[str, Any] | None = field(default=None, repr=False)
    jwks_uri: str | None = None
    org_id: str = DEFAULT_ORG_ID
    grant_types: tuple[str, ...] = ("client_credentials",)
    origin: str = "admin"
    rate_limits: tuple[tuple[str, str], ...] = ()
    redirect_uris: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ClientUpdate:
    """Fields to change; None leaves a field as it is."""

    name: str | None = None
    scopes: tuple[str, ...] | None = None
    ip_allow: tuple[str, ...] | None = None
    resources: tuple[str, ...] | None = None
    rate_limits: tuple[tuple[str, str], ...] | None = None
    redirect_uris: tuple[str, ...] | None = None


GRANT_TYPES = frozenset({"client_credentials", "authorization_code", "refresh_token"})


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 200 or not name.isprintable():
        raise Invalid("name: must be 1 to 200 printable characters")
    return name


def check_key_source(
    auth_method: str, jwks: dict[str, Any] | None, jwks_uri: str | None,
    allowed: tuple[str, ...] = AUTH_METHODS,
) -> None:
    if auth_method not in allowed:
        raise Invalid(f"token_endpoint_auth_method: must be one of {', '.join(allowed)}")
    if jwks is not None and jwks_uri is not None:
        raise Invalid("jwks and jwks_uri: give one, not both (RFC 7591 §2)")
    if auth_method == "private_key_jwt" and jwks is None and jwks_uri is None:
        raise Invalid("private_key_jwt needs the client's public keys: jwks or jwks_uri")
    if jwks is not None:
        check_jwks(jwks)
    if jwks_uri is not None:
        check_jwks_uri(jwks_uri)


def cutoff(now: float) -> float:
    """The revocation cutoff for a change at `now`: the next whole second.

    Token `iat` is whole seconds. Tokens issued before the change have `iat <= floor(now)`, below
    the cutoff; tokens issued after it get `iat >= cutoff` (see `tokens.mint_access_token`), so
    "dead when iat < cutoff" never kills a token issued after the change.
    """
    return float(math.floor(now) + 1)


def client_row(session: Session, client_id: str, *, lock: bool = False) -> Client:
    """`lock`: held until the transaction ends (concurrent changes go one after another)."""
    row = session.get(Client, client_id, with_for_update=lock, populate_existing=lock)
    if row is None:
        raise NotFound(f"no client {client_id}")
    return row


def create_client(
    session: Session, catalog: ScopeCatalog, spec: ClientSpec, now: float, *,
    client_id: str | None = None, secret: str | None = None,
    actor: audit.Actor = audit.SYSTEM,
) -> tuple[ClientRecord, str | None]:
    """Create a client; returns it and its secret (shown once; None when the method needs
    none). Registration passes its own `client_id` and (derived) `secret`."""
    name = _check_name(spec.name)
    scopes = catalog.check_client_scopes(spec.scopes)
    if not spec.grant_types or not set(spec.grant_types) <= GRANT_TYPES:
        raise Invalid("grant_types: one or more of " + ", ".join(sorted(GRANT_TYPES)))
    if "authorization_code" in spec.grant_types and not spec.redirect_uris:
        raise Invalid("redirect_uris: required for the authorization_code grant")
    # A public client ("none") only for people's flows: never with client_credentials.
    public_ok = spec.origin == "dcr" or "client_credentials" not in spec.grant_types
    check_key_source(spec.auth_method, spec.jwks, spec.jwks_uri,
                     (*AUTH_METHODS, "none") if public_ok else AUTH_METHODS)
    if session.get(Organization, spec.org_id) is None:
        raise Invalid(f"org_id: no organisation {spec.org_id}")
    if spec.auth_method not in SECRET_METHODS:
        secret = None
    elif secret is None:
        secret = hashing.new_secret(hashing.CLIENT_SECRET_PREFIX)
    row = Client(
        client_id=client_id or hashing.new_client_id(), org_id=spec.org_id, name=name,
        secret_digest=hashing.digest(secret) if secret else None,
        auth_method=spec.auth_method, grant_types=list(spec.grant_types), origin=spec.origin,
        scopes=list(scopes), ip_allow=check_cidrs(list(spec.ip_allow)),
        resources=check_resources(list(spec.resources)), jwks=spec.jwks,
        jwks_uri=spec.jwks_uri, status="active", created_at=now, updated_at=now,
        tokens_valid_after=0.0, rate_limits=check_overrides(spec.rate_limits),
        redirect_uris=check_redirect_uris(spec.redirect_uris),
    )
    session.add(row)
    events.record(session, "client.created", row.client_id, now, row.org_id,
                  {"origin": spec.origin})
    audit.record(session, actor, "client.create", row.client_id, now, org_id=row.org_id,
                 details={"name": name, "scopes": list(scopes), "origin": spec.origin,
                          "auth_method": spec.auth_method})
    session.flush()
    return ClientRecord.from_row(row), secret


def load_client(session: Session, client_id: str) -> ClientRecord | None:
    """The token path's one indexed read (on a cache miss)."""
    row = session.get(Client, client_id)
    if row is None:
        return None
    org = session.get(Organization, row.org_id)
    return ClientRecord.from_row(row, org_active=org is not None and org.status == "active")


def get_client(session: Session, client_id: str) -> ClientRecord:
    return ClientRecord.from_row(client_row(session, client_id))


def list_clients(
    session: Session, org_id: str | None = None, origin: str | None = None, *,
    status: str | None = None, name_contains: str | None = None,
    after: tuple[float, str] | None = None, limit: int | None = None,
) -> list[ClientRecord]:
    """Oldest first; `after` (created_at, client_id) and `limit` page through (keyset)."""
    query = select(Client).order_by(Client.created_at, Client.client_id)
    if org_id is not None:
        query = query.where(Client.org_id == org_id)
    if origin is not None:
        query = query.where(Client.origin == origin)
    if status is not None:
        query = query.where(Client.status == status)
    if name_contains:
        query = query.where(Client.name.contains(name_contains, autoescape=True))
    if after is not None:
        query = query.where(tuple_(Client.created_at, Client.client_id) > after)
    if limit is not None:
        query = query.limit(limit)
    return [ClientRecord.from_row(row) for row in session.scalars(query)]


def update_client(
    session: Session, catalog: ScopeCatalog, client_id: str, change: ClientUpdate, now: float,
    actor: audit.Actor = audit.SYSTEM,
) -> ClientRecord:
    """Change a client. Narrowing what tokens may do (scopes, IP allowlist, resources) also
    cuts off every token issued before now."""
    row = client_row(session, client_id, lock=True)
    changed: list[str] = []
    if change.name is not None:
        row.name = _check_name(change.name)
        changed.append("name")
    if change.scopes is not None:
        row.scopes = list(catalog.check_client_scopes(change.scopes))
        changed.append("scopes")
        if row.registration is not None:
            # The operator's choice is the new ceiling: an RFC 7592 update can neither undo a
            # narrowing nor climb above a widening.
            row.registration.scope_ceiling = list(row.scopes)
    if change.ip_allow is not None:
        row.ip_allow = check_cidrs(list(change.ip_allow))
        changed.append("ip_allow")
    if change.resources is not None:
        row.resources = check_resources(list(change.resources))
        changed.append("resources")
    if change.rate_limits is not None:
        row.rate_limits = check_overrides(change.rate_limits)
        changed.append("rate_limits")
    if change.redirect_uris is not None:
        row.redirect_uris = check_redirect_uris(change.redirect_uris)
        changed.append("redirect_uris")
    if not changed:
        return ClientRecord.from_row(row)
    row.updated_at = now
    # Name, limits and redirect URIs do not change what tokens may do.
    if set(changed) - {"name", "rate_limits", "redirect_uris"}:
        row.tokens_valid_after = cutoff(now)
    events.record(session, "client.updated", client_id, now, row.org_id,
                  {"fields": changed, "tokens_valid_after": row.tokens_valid_after})
    audit.record(session, actor, "client.update", client_id, now, org_id=row.org_id,
                 details={"fields": changed, "scopes": row.scopes, "ip_allow": row.ip_allow,
                          "resources": row.resources})
    return ClientRecord.from_row(row)


def set_disabled(
    session: Session, client_id: str, disabled: bool, now: float,
    actor: audit.Actor = audit.SYSTEM,
) -> ClientRecord:
    """Disable (cutting off its tokens) or re-enable a client; a repeat is a no-op."""
    row = client_row(session, client_id, lock=True)
    status = "disabled" if disabled else "active"
    if row.status == status:
        return ClientRecord.from_row(row)
    row.status = status
    row.updated_at = now
    if disabled:
        row.tokens_valid_after = cutoff(now)
    events.record(session, "client.disabled" if disabled else "client.enabled", client_id, now,
                  row.org_id, {"tokens_valid_after": row.tokens_valid_after})
    audit.record(session, actor, "client.disable" if disabled else "client.enable", client_id,
                 now, org_id=row.org_id)
    return ClientRecord.from_row(row)


def delete_client(
    session: Session, client_id: str, now: float, actor: audit.Actor = audit.SYSTEM,
) -> None:
    row = client_row(session, client_id, lock=True)
    events.record(session, "client.deleted", client_id, now, row.org_id,
                  {"tokens_valid_after": cutoff(now)})
    audit.record(session, actor, "client.delete", client_id, now, org_id=row.org_id,
                 details={"name": row.name, "origin": row.origin})
    session.delete(row)


def rotate_secret(
    session: Session, client_id: str, now: float, actor: audit.Actor = audit.SYSTEM,
) -> str:
    """A new secret (shown once); the old one stops working at once. Tokens live on."""
    row = client_row(session, client_id, lock=True)
    if row.auth_method not in SECRET_METHODS:
        raise Invalid(f"this client authenticates with {row.auth_method} and has no secret")
    secret = hashing.new_secret(hashing.CLIENT_SECRET_PREFIX)
    row.secret_digest = hashing.digest(secret)
    row.updated_at = now
    events.record(session, "client.secret_rotated", client_id, now, row.org_id)
    audit.record(session, actor, "client.rotate_secret", client_id, now, org_id=row.org_id)
    return secret
