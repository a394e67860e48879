"""API key lifecycle: create, list, show, update, rotate, revoke. Each change writes its event
(caches on every instance drop the key) and its audit entry in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from authserver import audit, events, hashing
from authserver.apikeys.format import ENVIRONMENTS, Environment, new_key
from authserver.apikeys.permissions import check_permissions
from authserver.apikeys.records import ApiKeyRecord
from authserver.clients.records import check_cidrs
from authserver.errors import Conflict, Invalid, NotFound
from authserver.ratelimit import check_overrides
from authserver.scopes import ScopeCatalog
from authserver.storage.models import ApiKey, Organization

MAX_NAME = 200
MAX_GRACE = 30 * 86400.0


@dataclass(frozen=True)
class ApiKeySpec:
    name: str
    org_id: str
    permissions: tuple[str, ...]
    environment: Environment = "live"
    ip_allow: tuple[str, ...] = ()
    expires_at: float | None = None
    rate_limits: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ApiKeyUpdate:
    """Fields left None stay as they are; `clear_expiry` removes an expiry."""

    name: str | None = None
    permissions: tuple[str, ...] | None = None
    ip_allow: tuple[str, ...] | None = None
    expires_at: float | None = None
    clear_expiry: bool = False
    rate_limits: tuple[tuple[str, str], ...] | None = None


def _name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise Invalid(f"name: 1 to {MAX_NAME} printable characters")
    return name


def _expiry(expires_at: float | None, now: float) -> float | None:
    if expires_at is not None and expires_at <= now:
        raise Invalid("expires_at: must be in the future")
    return expires_at


def key_row(session: Session, key_id: str, org_id: str | None = None, *,
            lock: bool = False) -> ApiKey:
    """The key; NotFound also when it belongs to another organisation than `org_id`. `lock`:
    held until the transaction ends, so concurrent changes of one key go one after another."""
    row = session.get(ApiKey, key_id, with_for_update=lock, populate_existing=lock)
    if row is None or (org_id is not None and row.org_id != org_id):
        raise NotFound(f"no API key {key_id}")
    return row


def _live_row(session: Session, key_id: str, now: float, org_id: str | None) -> ApiKey:
    """A key that may still change: not revoked, not expired, not replaced by a rotation (its
    grace period only winds it down)."""
    row = key_row(session, key_id, org_id, lock=True)
    if row.status != "active":
        raise Conflict(f"API key {key_id} is revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise Conflict(f"API key {key_id} has expired")
    if row.replaced_by is not None:
        raise Conflict(f"API key {key_id} was rotated (replaced by {row.replaced_by}); change "
                       "the new key")
    return row


def _record(session: Session, row: ApiKey) -> ApiKeyRecord:
    org = session.get(Organization, row.org_id)
    return ApiKeyRecord.from_row(row, org_active=org is not None and org.status == "active")


def check_spec(session: Session, catalog: ScopeCatalog, spec: ApiKeySpec, now: float
               ) -> ApiKeySpec:
    """The spec, normalised, when a key could be made from it now; Invalid or NotFound."""
    if spec.environment not in ENVIRONMENTS:
        raise Invalid("environment: live or test")
    if session.get(Organization, spec.org_id) is None:
        raise NotFound(f"no organisation {spec.org_id}")
    permissions = check_permissions(spec.permissions, catalog.descriptions)
    if not permissions:
        raise Invalid("permissions: at least one")
    return ApiKeySpec(
        name=_name(spec.name), org_id=spec.org_id, permissions=permissions,
        environment=spec.environment, ip_allow=tuple(check_cidrs(list(spec.ip_allow))),
        expires_at=_expiry(spec.expires_at, now),
        rate_limits=tuple(check_overrides(spec.rate_limits).items()))


def create_key(
    session: Session, catalog: ScopeCatalog, spec: ApiKeySpec, prefix: str, now: float,
    actor: audit.Actor, *, action: str = "api_key.create", details: dict[str, Any] | None = None,
) -> tuple[ApiKeyRecord, str]:
    """A new key and the key itself (shown once; only its digest is kept). `details` add to
    the audit entry's."""
    spec = check_spec(session, catalog, spec, now)
    key_id, key = new_key(prefix, spec.environment)
    row = ApiKey(
        id=key_id, digest=hashing.digest(key), org_id=spec.org_id, name=spec.name,
        environment=spec.environment, permissions=list(spec.permissions),
        ip_allow=list(spec.ip_allow), expires_at=spec.expires_at,
        rate_limits=dict(spec.rate_limits), status="active", created_by=actor.name,
        created_at=now, updated_at=now,
    )
    session.add(row)
    events.record(session, "api_key.created", key_id, now, spec.org_id)
    audit.record(session, actor, action, key_id, now, org_id=spec.org_id,
                 details={"name": row.name, "permissions": row.permissions,
                          "environment": row.environment, **(details or {})})
    session.flush()
    return _record(session, row), key


def load_key(session: Session, key_id: str) -> ApiKeyRecord | None:
    """The request path's one indexed read (on a cache miss)."""
    row = session.get(ApiKey, key_id)
    return None if row is None else _record(session, row)


def get_key(session: Session, key_id: str, org_id: str | None = None, *,
            lock: bool = False) -> ApiKeyRecord:
    return _record(session, key_row(session, key_id, org_id, lock=lock))


def list_keys(
    session: Session, org_id: str | None = None, *, include_revoked: bool = False,
    after: tuple[float, str] | None = None, limit: int | None = None,
) -> list[ApiKeyRecord]:
    """Oldest first; `after` (created_at, id) and `limit` page through (keyset)."""
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if org_id is not None:
        query = query.where(ApiKey.org_id == org_id)
    if not include_revoked:
        query = query.where(ApiKey.status == "active")
    if after is not None:
        query = query.where(tuple_(ApiKey.created_at, ApiKey.id) > after)
    if limit is not None:
        query = query.limit(limit)
    return [_record(session, row) for row in session.scalars(query)]


def _changes(row: ApiKey, catalog: ScopeCatalog, update: ApiKeyUpdate, now: float
             ) -> dict[str, Any]:
    """The validated change (JSON-ready), by field; Invalid when a field is bad or empty."""
    changed: dict[str, Any] = {}
    if update.name is not None:
        changed["name"] = _name(update.name)
    if update.permissions is not None:
        permissions = check_permissions(update.permissions, catalog.descriptions)
        if not permissions:
            raise Invalid("permissions: at least one")
        changed["permissions"] = list(permissions)
    if update.ip_allow is not None:
        changed["ip_allow"] = check_cidrs(list(update.ip_allow))
    if update.clear_expiry:
        changed["expires_at"] = None
    elif update.expires_at is not None:
        changed["expires_at"] = _expiry(update.expires_at, now)
    if update.rate_limits is not None:
        changed["rate_limits"] = check_overrides(update.rate_limits)
    if not changed:
        raise Invalid("nothing to change: give name, permissions, ip_allowlist, expires_at or "
                      "rate_limits")
    return changed


def check_update(
    session: Session, catalog: ScopeCatalog, key_id: str, update: ApiKeyUpdate, now: float,
    org_id: str | None = None,
) -> dict[str, Any]:
    """What `update_key` would change now (by field, JSON-ready), changing nothing; the same
    errors. For a change that waits for approval (docs/approvals.md)."""
    return _changes(_live_row(session, key_id, now, org_id), catalog, update, now)


def update_key(
    session: Session, catalog: ScopeCatalog, key_id: str, update: ApiKeyUpdate, now: float,
    actor: audit.Actor, org_id: str | None = None, *, details: dict[str, Any] | None = None,
) -> ApiKeyRecord:
    """`details` add to the audit entry's (which lists what changed)."""
    row = _live_row(session, key_id, now, org_id)
    changed = _changes(row, catalog, update, now)
    for field, value in changed.items():
        setattr(row, field, value)
    row.updated_at = now
    events.record(session, "api_key.updated", key_id, now, row.org_id)
    audit.record(session, actor, "api_key.update", key_id, now, org_id=row.org_id,
                 details={**changed, **(details or {})})
    return _record(session, row)


def rotate_key(
    session: Session, key_id: str, prefix: str, now: float, actor: audit.Actor, *,
    grace: float = 0.0, org_id: str | None = None,
) -> tuple[ApiKeyRecord, str]:
    """A new key with the same settings; the old one is revoked now, or expires after `grace`
    seconds. Returns the new key's record and the new key (shown once)."""
    if not 0 <= grace <= MAX_GRACE:
        raise Invalid(f"grace_period: 0 to {int(MAX_GRACE)} seconds")
    old = _live_row(session, key_id, now, org_id)
    new_id, key = new_key(prefix, old.environment)  # type: ignore[arg-type]
    row = ApiKey(
        id=new_id, digest=hashing.digest(key), org_id=old.org_id, name=old.name,
        environment=old.environment, permissions=list(old.permissions),
        ip_allow=list(old.ip_allow), expires_at=old.expires_at,
        rate_limits=dict(old.rate_limits), status="active", created_by=actor.name,
        created_at=now, updated_at=now,
    )
    session.add(row)
    old.replaced_by = new_id
    old.updated_at = now
    if grace > 0:
        old.expires_at = min(old.expires_at or now + grace, now + grace)
    else:
        old.status, old.revoked_at = "revoked", now
    events.record(session, "api_key.created", new_id, now, old.org_id)
    events.record(session, "api_key.rotated", key_id, now, old.org_id, {"replaced_by": new_id})
    audit.record(session, actor, "api_key.rotate", key_id, now, org_id=old.org_id,
                 details={"replaced_by": new_id, "grace_period": grace})
    session.flush()
    return _record(session, row), key


def revoke_key(
    session: Session, key_id: str, now: float, actor: audit.Actor, org_id: str | None = None
) -> ApiKeyRecord:
    """Revoke at once; a repeat is a no-op."""
    row = key_row(session, key_id, org_id, lock=True)
    if row.status == "active":
        row.status, row.revoked_at, row.updated_at = "revoked", now, now
        events.record(session, "api_key.revoked", key_id, now, row.org_id)
        audit.record(session, actor, "api_key.revoke", key_id, now, org_id=row.org_id)
    return _record(session, row)
