"""People: accounts for the admin UI (role `admin`) and the interactive flows (role `user`).

Passwords are hashed with argon2id (argon2-cffi's defaults). Repeated failures lock an account
with an exponential backoff; an unknown username costs as much as a wrong password. (The
"locked" answer itself tells that an account exists; it comes only after failures.)
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from authserver import audit, hashing
from authserver.errors import Conflict, Invalid, NotFound
from authserver.storage.models import DEFAULT_ORG_ID, Organization, User, WebSession

Role = Literal["admin", "user"]
ROLES: tuple[Role, ...] = ("admin", "user")
USER_ID_PREFIX = "usr_"
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
FREE_FAILURES = 5  # failures in a row before the first lock
MAX_LOCK = 900.0
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@+-]{0,199}$")
_hasher = PasswordHasher()
# Checked against when the username is unknown, so that case takes as long as a wrong password.
_DUMMY = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: str
    username: str
    email: str | None
    name: str
    role: str
    org_id: str
    status: str
    created_at: float
    last_login_at: float | None
    email_verified: bool = False

    @classmethod
    def from_row(cls, row: User) -> UserRecord:
        return cls(row.id, row.username, row.email, row.name, row.role, row.org_id, row.status,
                   row.created_at, row.last_login_at, bool(row.email_verified))

    def public_dict(self) -> dict[str, Any]:
        return {"id": self.id, "username": self.username, "email": self.email,
                "email_verified": self.email_verified,
                "name": self.name, "role": self.role, "org_id": self.org_id,
                "status": self.status, "created_at": self.created_at,
                "last_login_at": self.last_login_at}


def check_password(password: str) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise Invalid(f"password: {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


def _username(value: str) -> str:
    value = value.strip().lower()
    if not _USERNAME.match(value):
        raise Invalid("username: 1 to 200 of a-z 0-9 . _ @ + -, starting with a letter or digit")
    return value


def create_user(
    session: Session, username: str, password: str, now: float, actor: audit.Actor, *,
    role: str = "admin", org_id: str = DEFAULT_ORG_ID, email: str | None = None,
    name: str = "", email_verified: bool = False,
) -> UserRecord:
    if role not in ROLES:
        raise Invalid("role: admin or user")
    if session.get(Organization, org_id) is None:
        raise NotFound(f"no organisation {org_id}")
    if email is not None and (len(email) > 320 or "@" not in email):
        raise Invalid("email: an address like alice@example.com")
    row = User(id=USER_ID_PREFIX + secrets.token_hex(8), username=_username(username),
               email=email, name=name.strip()[:200], password_hash=_hasher.hash(
                   check_password(password)), role=role, org_id=org_id, status="active",
               created_at=now, updated_at=now, failed_logins=0,
               email_verified=email_verified)
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(f"username {row.username} is taken") from exc
    audit.record(session, actor, "user.create", row.id, now, org_id=org_id,
                 details={"username": row.username, "role": role})
    return UserRecord.from_row(row)


def list_users(session: Session, org_id: str | None = None) -> list[UserRecord]:
    query = select(User).order_by(User.created_at, User.id)
    if org_id is not None:
        query = query.where(User.org_id == org_id)
    return [UserRecord.from_row(r) for r in session.scalars(query)]


def set_password(session: Session, user_id: str, password: str, now: float,
                 actor: audit.Actor) -> None:
    row = session.get(User, user_id)
    if row is None:
        raise NotFound(f"no user {user_id}")
    row.password_hash = _hasher.hash(check_password(password))
    row.failed_logins, row.locked_until, row.updated_at = 0, None, now
    audit.record(session, actor, "user.set_password", user_id, now, org_id=row.org_id)


@dataclass(frozen=True, slots=True)
class LoginResult:
    user: UserRecord | None
    # Seconds until another attempt is possible, when the account is locked.
    locked_for: float | None = None


def login(session: Session, username: str, password: str, now: float,
          source: str | None = None) -> LoginResult:
    """Check a password. Failures count; from the sixth in a row the account is locked for
    30 s, doubling up to 15 min. Every attempt is audited (never the password)."""
    # Locked for the transaction: parallel guesses are counted one after another.
    row = session.scalars(select(User).where(User.username == username.strip().lower())
                          .with_for_update()).first()
    actor = audit.Actor(f"user:{row.id}" if row else "anonymous", source)
    target = row.id if row else username.strip().lower()[:200]
    if row is not None and row.locked_until is not None and row.locked_until > now:
        _hasher_verify(_DUMMY, password)
        audit.record(session, actor, "user.login", target, now, org_id=row.org_id,
                     outcome="denied", details={"reason": "locked"})
        return LoginResult(None, row.locked_until - now)
    ok = _hasher_verify(row.password_hash if row else _DUMMY, password) and row is not None \
        and row.status == "active"
    if not ok or row is None:
        if row is not None:
            row.failed_logins += 1
            over = row.failed_logins - FREE_FAILURES
            if over > 0:
                row.locked_until = now + min(MAX_LOCK, 30.0 * 2 ** (over - 1))
        audit.record(session, actor, "user.login", target, now,
                     org_id=row.org_id if row else None, outcome="failure")
        return LoginResult(None)
    if _hasher.check_needs_rehash(row.password_hash):
        row.password_hash = _hasher.hash(password)
    row.failed_logins, row.locked_until, row.last_login_at = 0, None, now
    audit.record(session, actor, "user.login", row.id, now, org_id=row.org_id)
    return LoginResult(UserRecord.from_row(row))


def _hasher_verify(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password[:MAX_PASSWORD])
    except (VerificationError, InvalidHashError):
        return False


SESSION_TOKEN_PREFIX = "ass_"


@dataclass(frozen=True, slots=True)
class SignedIn:
    user: UserRecord
    csrf_token: str = field(repr=False)
    expires_at: float = 0.0


def start_session(session: Session, user: UserRecord, now: float, lifetime: float,
                  source: str | None = None) -> tuple[str, SignedIn]:
    """A new browser session: (the cookie value, shown to the browser only, and the state)."""
    token = SESSION_TOKEN_PREFIX + secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    session.add(WebSession(id=hashing.digest(token), user_id=user.id, csrf_token=csrf,
                           created_at=now, expires_at=now + lifetime, source=source))
    return token, SignedIn(user, csrf, now + lifetime)


def resume_session(session: Session, token: str, now: float) -> SignedIn | None:
    """The session behind a cookie value, while it and its user are active."""
    if not token.startswith(SESSION_TOKEN_PREFIX) or len(token) > 100:
        return None
    row = session.get(WebSession, hashing.digest(token))
    if row is None or row.expires_at <= now:
        return None
    user = session.get(User, row.user_id)
    if user is None or user.status != "active":
        return None
    return SignedIn(UserRecord.from_row(user), row.csrf_token, row.expires_at)


def end_session(session: Session, token: str) -> None:
    session.execute(delete(WebSession).where(WebSession.id == hashing.digest(token)))


def purge_sessions(session: Session, now: float) -> int:
    result = session.execute(delete(WebSession).where(WebSession.expires_at <= now))
    return int(result.rowcount)  # type: ignore[attr-defined]


# -- administration (admin API, admin UI, CLI) -------------------------------------------------

MAX_NAME = 200
MAX_EMAIL = 320


def check_name(name: str) -> str:
    name = name.strip()
    if len(name) > MAX_NAME or not name.isprintable():
        raise Invalid(f"name: up to {MAX_NAME} printable characters")
    return name


def check_email(email: str) -> str:
    email = email.strip()
    local, at, domain = email.rpartition("@")
    if not (at and local and domain) or len(email) > MAX_EMAIL or not email.isprintable() \
            or any(c.isspace() for c in email):
        raise Invalid("email: an address like alice@example.com")
    return email


def get_user(session: Session, user_id: str) -> UserRecord:
    row = session.get(User, user_id)
    if row is None:
        raise NotFound(f"no user {user_id}")
    return UserRecord.from_row(row)


def user_by_username(session: Session, username: str) -> UserRecord:
    row = session.scalars(select(User).where(User.username == username.strip().lower())).first()
    if row is None:
        raise NotFound(f"no user {username.strip()[:200]}")
    return UserRecord.from_row(row)


def page_users(
    session: Session, org_id: str | None = None, *, role: str | None = None,
    status: str | None = None, after: tuple[float, str] | None = None, limit: int | None = None,
) -> list[UserRecord]:
    """Oldest first, optionally of one organisation, role or status; `after` (created_at, id)
    and `limit` page through (keyset)."""
    query = select(User).order_by(User.created_at, User.id)
    if org_id is not None:
        query = query.where(User.org_id == org_id)
    if role is not None:
        query = query.where(User.role == role)
    if status is not None:
        query = query.where(User.status == status)
    if after is not None:
        query = query.where(or_(User.created_at > after[0],
                                (User.created_at == after[0]) & (User.id > after[1])))
    if limit is not None:
        query = query.limit(limit)
    return [UserRecord.from_row(r) for r in session.scalars(query)]


@dataclass(frozen=True, slots=True)
class UserChange:
    """What to change; None leaves a field as it is. `email=""` removes the address."""

    name: str | None = None
    email: str | None = None
    email_verified: bool | None = None
    role: str | None = None
    password: str | None = field(default=None, repr=False)


def update_user(session: Session, user_id: str, change: UserChange, now: float,
                actor: audit.Actor) -> UserRecord:
    """Change a person's profile, role or password (each checked before anything changes).
    A new email address is unverified unless `email_verified` comes with it. Audited as
    `user.update` with the names of the changed fields (a password as `user.set_password`)."""
    name = check_name(change.name) if change.name is not None else None
    email = (check_email(change.email) if change.email.strip() else "") \
        if change.email is not None else None
    if change.role is not None and change.role not in ROLES:
        raise Invalid("role: admin or user")
    if change.password is not None:
        check_password(change.password)
    row = session.get(User, user_id, with_for_update=True)
    if row is None:
        raise NotFound(f"no user {user_id}")
    changed: list[str] = []
    if name is not None and name != row.name:
        row.name = name
        changed.append("name")
    if email is not None and (email or None) != row.email:
        row.email = email or None
        changed.append("email")
        if change.email_verified is None and row.email_verified:
            row.email_verified = False
            changed.append("email_verified")
    if change.email_verified is not None and change.email_verified != row.email_verified:
        row.email_verified = change.email_verified
        changed.append("email_verified")
    if change.role is not None and change.role != row.role:
        row.role = change.role
        changed.append("role")
    if changed:
        row.updated_at = now
        details: dict[str, Any] = {"changed": changed}
        if "role" in changed:
            details["role"] = row.role
        audit.record(session, actor, "user.update", user_id, now, org_id=row.org_id,
                     details=details)
    if change.password is not None:
        set_password(session, user_id, change.password, now, actor)
    return UserRecord.from_row(row)
