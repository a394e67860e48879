"""Quorum approval of sensitive admin actions (docs/approvals.md).

A gated action (`[approvals] actions`, when `required` > 0) is not done when asked: it becomes
a pending request, which `required` admins other than the requester approve (one rejection
ends it; it expires after `request_lifetime`). A delete runs in the transaction of the final
approval. An API key is made only when its requester reveals it after approval, and shown that
once. Every step writes its audit entry in the transaction of the step. A request's payload is
the action's validated arguments: never a secret.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from authserver import apikeys, audit, clients, organizations
from authserver.apikeys import ApiKeyRecord, ApiKeySpec
from authserver.config import ApprovalSettings
from authserver.errors import Conflict, Invalid, NotFound
from authserver.scopes import ScopeCatalog
from authserver.storage.models import ApiKey, ApprovalRequest, AuditEntry

REQUEST_ID_PREFIX = "apr_"
KEY_ACTIONS = ("api_key.create", "api_key.create.privileged")
# Raising a key to privileged permissions: gated with `api_key.create.privileged` (else a
# plain key, made at once, could be raised to `*` by one admin). Runs on the final approval.
KEY_UPDATE_ACTION = "api_key.update.privileged"
DELETE_ACTIONS = ("organization.delete", "client.delete")
STATES = ("pending", "approved", "rejected", "expired", "executed")
MAX_REASON = 500
# How far `created_by` links are followed (a key made by a key made by ...).
MAX_LINEAGE = 32


class NotAllowed(Conflict):
    """This actor may not take this step (its own request, or one it descends from)."""


@dataclass(frozen=True, slots=True)
class ApprovalView:
    id: str
    action: str
    org_id: str
    target: str
    requested_by: str
    payload: dict[str, Any]
    state: str
    required_approvals: int
    approvals: tuple[dict[str, Any], ...]
    rejection: dict[str, Any] | None
    created_at: float
    expires_at: float
    decided_at: float | None
    executed_at: float | None
    result: str | None

    def public_dict(self) -> dict[str, Any]:
        return {"id": self.id, "action": self.action, "org_id": self.org_id,
                "target": self.target, "requested_by": self.requested_by,
                "payload": self.payload, "state": self.state,
                "required_approvals": self.required_approvals,
                "approvals_needed": max(0, self.required_approvals - len(self.approvals))
                if self.state == "pending" else 0,
                "approvals": list(self.approvals), "rejection": self.rejection,
                "created_at": self.created_at, "expires_at": self.expires_at,
                "decided_at": self.decided_at, "executed_at": self.executed_at,
                "result": self.result}

    @classmethod
    def from_row(cls, row: ApprovalRequest, now: float) -> ApprovalView:
        return cls(row.id, row.action, row.org_id, row.target, row.requested_by,
                   dict(row.payload), _state(row, now), row.required_approvals,
                   tuple(dict(a) for a in row.approvals),
                   None if row.rejection is None else dict(row.rejection), row.created_at,
                   row.expires_at, row.decided_at, row.executed_at, row.result)


def _state(row: ApprovalRequest, now: float) -> str:
    if row.state in ("pending", "approved") and row.expires_at <= now:
        return "expired"
    return row.state


# -- which actions are gated ---------------------------------------------------------------


def privileged(catalog: ScopeCatalog, permissions: tuple[str, ...]) -> bool:
    """`*`, an api_key_only scope of the catalog, or a wildcard that covers one."""
    if "*" in permissions or set(permissions) & catalog.api_key_only:
        return True
    for scope in catalog.api_key_only:
        resource, dot, action = scope.partition(".")
        if dot and apikeys.grants(permissions, resource, action):
            return True
    return False


def key_action(settings: ApprovalSettings, catalog: ScopeCatalog,
               permissions: tuple[str, ...]) -> str | None:
    """The gated action that creating a key with `permissions` is, or None (made at once)."""
    if settings.gates("api_key.create.privileged") and privileged(catalog, permissions):
        return "api_key.create.privileged"
    if settings.gates("api_key.create"):
        return "api_key.create"
    return None


def _privileged_part(catalog: ScopeCatalog, permissions: tuple[str, ...]) -> set[str]:
    """The privileged reach of a permission set: `*` and the api_key_only scopes it grants."""
    part = {"*"} if "*" in permissions else set()
    for scope in catalog.api_key_only:
        resource, dot, action = scope.partition(".")
        if scope in permissions or "*" in permissions or (
                dot and apikeys.grants(permissions, resource, action)):
            part.add(scope)
    return part


def key_update_action(settings: ApprovalSettings, catalog: ScopeCatalog,
                      current: tuple[str, ...], new: tuple[str, ...] | None) -> str | None:
    """The gated action that changing a key's permissions from `current` to `new` is, or None:
    gated when it reaches privileged permissions the key does not hold yet (narrowing, or
    keeping, a privileged key is not)."""
    if new is None or not settings.gates("api_key.create.privileged"):
        return None
    if _privileged_part(catalog, new) - _privileged_part(catalog, current):
        return KEY_UPDATE_ACTION
    return None


# -- requests ------------------------------------------------------------------------------


def _new(session: Session, settings: ApprovalSettings, action: str, org_id: str, target: str,
         payload: dict[str, Any], now: float, actor: audit.Actor) -> ApprovalView:
    row = ApprovalRequest(
        id=REQUEST_ID_PREFIX + secrets.token_hex(8), action=action, org_id=org_id,
        target=target, requested_by=actor.name, payload=payload, state="pending",
        required_approvals=settings.required, approvals=[], rejection=None, created_at=now,
        expires_at=now + settings.request_lifetime)
    session.add(row)
    audit.record(session, actor, "approval.request", row.id, now, org_id=org_id,
                 details={"action": action, "target": target,
                          "required_approvals": settings.required})
    session.flush()
    return ApprovalView.from_row(row, now)


def request_key(
    session: Session, settings: ApprovalSettings, catalog: ScopeCatalog, action: str,
    spec: ApiKeySpec, now: float, actor: audit.Actor, *, expires_in: float | None = None,
) -> ApprovalView:
    """A request to create a key (validated now; made at its reveal). With `expires_in`, the
    key's expiry counts from the reveal."""
    if expires_in is not None:
        if expires_in <= 0:
            raise Invalid("expires_in: must be positive")
        spec = ApiKeySpec(spec.name, spec.org_id, spec.permissions, spec.environment,
                          spec.ip_allow, now + expires_in, spec.rate_limits)
    spec = apikeys.check_spec(session, catalog, spec, now)
    payload = {"name": spec.name, "org_id": spec.org_id, "permissions": list(spec.permissions),
               "environment": spec.environment, "ip_allowlist": list(spec.ip_allow),
               "expires_at": None if expires_in is not None else spec.expires_at,
               "expires_in": expires_in, "rate_limits": dict(spec.rate_limits)}
    return _new(session, settings, action, spec.org_id, spec.name, payload, now, actor)


def request_key_update(
    session: Session, settings: ApprovalSettings, catalog: ScopeCatalog, key_id: str,
    update: apikeys.ApiKeyUpdate, now: float, actor: audit.Actor, org_id: str | None = None,
) -> ApprovalView:
    """A request to change a key (validated now, applied on the final approval). The whole
    change waits, not only its permissions."""
    changes = apikeys.check_update(session, catalog, key_id, update, now, org_id)
    current = apikeys.get_key(session, key_id, org_id)
    payload = {"key_id": key_id, "name": current.name,
               "previous_permissions": list(current.permissions),
               "permissions": changes.get("permissions", list(current.permissions)),
               "changes": changes}
    return _new(session, settings, KEY_UPDATE_ACTION, current.org_id, key_id, payload, now,
                actor)


def _update_of(changes: dict[str, Any]) -> apikeys.ApiKeyUpdate:
    def strs(name: str) -> tuple[str, ...] | None:
        return tuple(changes[name]) if name in changes else None
    return apikeys.ApiKeyUpdate(
        name=changes.get("name"), permissions=strs("permissions"), ip_allow=strs("ip_allow"),
        expires_at=changes.get("expires_at"),
        clear_expiry="expires_at" in changes and changes["expires_at"] is None,
        rate_limits=tuple(changes["rate_limits"].items()) if "rate_limits" in changes
        else None)


def request_org_delete(session: Session, settings: ApprovalSettings, org_id: str, now: float,
                       actor: audit.Actor) -> ApprovalView:
    org = organizations.check_deletable(session, org_id, now)
    return _new(session, settings, "organization.delete", org_id, org_id,
                {"org_id": org_id, "name": org.name}, now, actor)


def request_client_delete(session: Session, settings: ApprovalSettings, client_id: str,
                          now: float, actor: audit.Actor) -> ApprovalView:
    record = clients.get_client(session, client_id)
    return _new(session, settings, "client.delete", record.org_id, client_id,
                {"client_id": client_id, "name": record.name,
                 "scopes": sorted(record.scopes)}, now, actor)


# -- reading -------------------------------------------------------------------------------


def _row(session: Session, request_id: str, org_id: str | None, *,
         lock: bool = False) -> ApprovalRequest:
    """NotFound also for a request of another organisation than `org_id` (None: any)."""
    row = session.get(ApprovalRequest, request_id, with_for_update=lock, populate_existing=lock)
    if row is None or (org_id is not None and row.org_id != org_id):
        raise NotFound(f"no approval request {request_id}")
    return row


def get_request(session: Session, request_id: str, org_id: str | None, now: float
                ) -> ApprovalView:
    return ApprovalView.from_row(_row(session, request_id, org_id), now)


def list_requests(
    session: Session, now: float, org_id: str | None = None, *, state: str | None = None,
    after: tuple[float, str] | None = None, limit: int | None = None,
) -> list[ApprovalView]:
    """Oldest first; `state` as shown (expiry derived); `after` (created_at, id) pages."""
    conditions: list[ColumnElement[bool]] = []
    if org_id is not None:
        conditions.append(ApprovalRequest.org_id == org_id)
    if state in ("pending", "approved"):
        conditions += [ApprovalRequest.state == state, ApprovalRequest.expires_at > now]
    elif state == "expired":
        conditions += [ApprovalRequest.state.in_(("pending", "approved")),
                       ApprovalRequest.expires_at <= now]
    elif state is not None:
        if state not in STATES:
            raise Invalid(f"state: one of {', '.join(STATES)}")
        conditions.append(ApprovalRequest.state == state)
    if after is not None:
        conditions.append(or_(ApprovalRequest.created_at > after[0],
                              and_(ApprovalRequest.created_at == after[0],
                                   ApprovalRequest.id > after[1])))
    query = select(ApprovalRequest).where(*conditions).order_by(ApprovalRequest.created_at,
                                                                 ApprovalRequest.id)
    if limit is not None:
        query = query.limit(limit)
    return [ApprovalView.from_row(r, now) for r in session.scalars(query)]


def count_pending(session: Session, now: float, org_id: str | None = None) -> int:
    """Requests still waiting for approval (not expired), of `org_id` (None: every one)."""
    query = select(func.count()).select_from(ApprovalRequest).where(
        ApprovalRequest.state == "pending", ApprovalRequest.expires_at > now)
    if org_id is not None:
        query = query.where(ApprovalRequest.org_id == org_id)
    return int(session.scalar(query) or 0)


# -- decisions -----------------------------------------------------------------------------


def _open(row: ApprovalRequest, now: float) -> None:
    state = _state(row, now)
    if state != "pending":
        raise Conflict(f"approval request {row.id} is {state}, not pending")


def _creator(session: Session, actor_name: str) -> str | None:
    kind, _, ident = actor_name.partition(":")
    if kind == "api_key":
        key = session.get(ApiKey, ident)
        return None if key is None else key.created_by
    if kind == "client":
        return session.scalar(select(AuditEntry.actor).where(
            AuditEntry.action == "client.create", AuditEntry.target == ident)
            .order_by(AuditEntry.id).limit(1))
    return None


def _lineage(session: Session, actor_name: str) -> list[str]:
    """Who made this credential, who made that one, and so on."""
    found: list[str] = []
    current: str | None = actor_name
    while len(found) < MAX_LINEAGE:
        current = _creator(session, current) if current else None
        if current is None or current in found:
            break
        found.append(current)
    return found


def approve(
    session: Session, settings: ApprovalSettings, request_id: str, org_id: str | None,
    now: float, actor: audit.Actor, catalog: ScopeCatalog | None = None,
) -> ApprovalView:
    """One approval. The final one approves the request: a delete or a key change runs now (in
    this transaction, so one that fails leaves the request pending), a new key waits for its
    reveal (within `request_lifetime` from now). A key change needs the `catalog`."""
    row = _row(session, request_id, org_id, lock=True)
    _open(row, now)
    if actor.name == row.requested_by:
        raise NotAllowed("the requester cannot approve its own request")
    if row.requested_by in _lineage(session, actor.name):
        raise NotAllowed("a credential made by the requester (directly or through others) "
                         "cannot approve its request")
    if actor.name in _lineage(session, row.requested_by):
        # The other way round: a person (or key) approving what a key it made asked for.
        raise NotAllowed("the requester is a credential made by this approver (directly or "
                         "through others): it cannot approve its request")
    if any(a.get("by") == actor.name for a in row.approvals):
        raise Conflict(f"approval request {row.id} is already approved by {actor.name}")
    row.approvals = [*row.approvals, {"by": actor.name, "at": now}]
    audit.record(session, actor, "approval.approve", row.id, now, org_id=row.org_id,
                 details={"action": row.action, "target": row.target,
                          "approvals": len(row.approvals),
                          "required_approvals": row.required_approvals})
    if len(row.approvals) >= row.required_approvals:
        row.state, row.decided_at = "approved", now
        if row.action in KEY_ACTIONS:
            row.expires_at = now + settings.request_lifetime
        else:
            _execute(session, row, now, actor, catalog)
    session.flush()
    return ApprovalView.from_row(row, now)


def _execute(session: Session, row: ApprovalRequest, now: float, actor: audit.Actor,
             catalog: ScopeCatalog | None) -> None:
    if row.action == KEY_UPDATE_ACTION:
        if catalog is None:
            raise Conflict(f"{row.action} needs the scope catalog to run")
        apikeys.update_key(session, catalog, row.target, _update_of(row.payload["changes"]),
                           now, actor, details={"approval": row.id})
    elif row.action == "organization.delete":
        organizations.delete_org(session, row.target, now, actor)
    elif row.action == "client.delete":
        clients.delete_client(session, row.target, now, actor)
    else:  # key requests run at their reveal, never here
        raise Conflict(f"{row.action} runs at its reveal")
    row.state, row.executed_at, row.result = "executed", now, row.target
    audit.record(session, actor, "approval.execute", row.id, now, org_id=row.org_id,
                 details={"action": row.action, "target": row.target,
                          "requested_by": row.requested_by})


def reject(
    session: Session, request_id: str, org_id: str | None, now: float, actor: audit.Actor,
    reason: str = "",
) -> ApprovalView:
    """One rejection ends a pending request (the requester may withdraw its own this way)."""
    reason = reason.strip()
    if len(reason) > MAX_REASON or not reason.isprintable():
        raise Invalid(f"reason: at most {MAX_REASON} printable characters")
    row = _row(session, request_id, org_id, lock=True)
    _open(row, now)
    row.state, row.decided_at = "rejected", now
    row.rejection = {"by": actor.name, "at": now, "reason": reason}
    audit.record(session, actor, "approval.reject", row.id, now, org_id=row.org_id,
                 details={"action": row.action, "target": row.target, "reason": reason})
    session.flush()
    return ApprovalView.from_row(row, now)


def reveal(
    session: Session, catalog: ScopeCatalog, request_id: str, org_id: str | None,
    prefix: str, now: float, actor: audit.Actor,
) -> tuple[ApprovalView, ApiKeyRecord, str]:
    """Make the approved key, for its requester only, once; returns the key (shown once)."""
    row = _row(session, request_id, org_id, lock=True)
    if row.action not in KEY_ACTIONS:
        raise Invalid(f"approval request {row.id} is not an API key request")
    if actor.name != row.requested_by:
        raise NotAllowed("only the requester can reveal the key")
    state = _state(row, now)
    if state == "executed":
        raise Conflict(f"the key of approval request {row.id} was revealed already "
                       f"({row.result}); it is shown only once")
    if state != "approved":
        raise Conflict(f"approval request {row.id} is {state}, not approved")
    payload = row.payload
    expires_in = payload.get("expires_in")
    spec = ApiKeySpec(
        name=payload["name"], org_id=payload["org_id"],
        permissions=tuple(payload["permissions"]), environment=payload["environment"],
        ip_allow=tuple(payload["ip_allowlist"]),
        expires_at=now + expires_in if expires_in is not None else payload["expires_at"],
        rate_limits=tuple(payload["rate_limits"].items()))
    record, key = apikeys.create_key(session, catalog, spec, prefix, now, actor,
                                     details={"approval": row.id})
    row.state, row.executed_at, row.result = "executed", now, record.id
    audit.record(session, actor, "approval.reveal", row.id, now, org_id=row.org_id,
                 details={"action": row.action, "api_key": record.id})
    session.flush()
    return ApprovalView.from_row(row, now), record, key
