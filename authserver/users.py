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
from sqlalchemy import delete, select
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

    @classmethod
    def from_row(cls, row: User) -> UserRecord:
        return cls(row.id, row.username, row.email, row.name, row.role, row.org_id, row.status,
                   row.created_at, row.last_login_at)

    def public_dict(self) -> dict[str, Any]:
        return {"id": self.id, "username": self.username, "email": self.email,
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
    name: str = "",
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
               created_at=now, updated_at=now, failed_logins=0)
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
