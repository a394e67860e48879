"""Authorization codes (RFC 6749 §4.1.2, OAuth 2.1 §4.1.3) with PKCE (RFC 7636, S256 only).

A code is stored as the SHA-256 of its value and used once: the exchange marks it used with a
conditional UPDATE, so two concurrent exchanges cannot both succeed. What the exchange issued
is written back to the code, so a second use can revoke it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from authserver import hashing
from authserver.storage.models import AuthorizationCode

CODE_PREFIX = "ac_"
# RFC 7636 §4.1: 43 to 128 unreserved characters; S256 challenges are 43 base64url characters.
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
_CHALLENGE = re.compile(r"^[A-Za-z0-9\-_]{43}$")


def valid_challenge(challenge: str) -> bool:
    """An S256 code_challenge: the base64url SHA-256 of a verifier, without padding."""
    return bool(_CHALLENGE.match(challenge))


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()) \
        .rstrip(b"=").decode("ascii")


def verifier_matches(verifier: str, challenge: str) -> bool:
    """RFC 7636 §4.6 with S256, compared in constant time."""
    if not _VERIFIER.match(verifier):
        return False
    return hmac.compare_digest(s256(verifier), challenge)


@dataclass(frozen=True, slots=True)
class CodeGrant:
    """What the person approved, as bound to the code."""

    id: str = field(repr=False)
    client_id: str
    user_id: str
    redirect_uri: str
    code_challenge: str = field(repr=False)
    scopes: tuple[str, ...]
    resources: tuple[str, ...]
    nonce: str | None
    auth_time: float
    created_at: float


@dataclass(frozen=True, slots=True)
class Reused:
    """A code presented again: what its first exchange issued, to be revoked."""

    client_id: str
    user_id: str
    access_jti: str | None
    access_exp: float | None
    refresh_family: str | None


Redemption = CodeGrant | Reused | Literal["unknown"]


def issue_code(
    session: Session, *, client_id: str, user_id: str, redirect_uri: str, code_challenge: str,
    scopes: tuple[str, ...], resources: tuple[str, ...], nonce: str | None, auth_time: float,
    now: float, lifetime: float,
) -> str:
    code = CODE_PREFIX + secrets.token_urlsafe(32)
    session.add(AuthorizationCode(
        id=hashing.digest(code), client_id=client_id, user_id=user_id, redirect_uri=redirect_uri,
        code_challenge=code_challenge, scopes=list(scopes), resources=list(resources),
        nonce=nonce, auth_time=auth_time, created_at=now, expires_at=now + lifetime))
    return code


def redeem_code(session: Session, code: str, now: float) -> Redemption:
    """Use the code: its grant the first time (while not expired), `Reused` after that,
    "unknown" for anything else. The caller checks client, redirect URI and verifier."""
    if not code.startswith(CODE_PREFIX) or len(code) > 100:
        return "unknown"
    digest = hashing.digest(code)
    result = session.execute(
        update(AuthorizationCode)
        .where(AuthorizationCode.id == digest, AuthorizationCode.used_at.is_(None))
        .values(used_at=now))
    row = session.get(AuthorizationCode, digest, populate_existing=True)
    if row is None:
        return "unknown"
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return Reused(row.client_id, row.user_id, row.access_jti, row.access_exp,
                      row.refresh_family)
    if row.expires_at <= now:
        return "unknown"
    return CodeGrant(digest, row.client_id, row.user_id, row.redirect_uri, row.code_challenge,
                     tuple(row.scopes), tuple(row.resources), row.nonce, row.auth_time,
                     row.created_at)


def record_issued(session: Session, code_id: str, access_jti: str, access_exp: float,
                  refresh_family: str | None) -> None:
    session.execute(update(AuthorizationCode).where(AuthorizationCode.id == code_id).values(
        access_jti=access_jti, access_exp=access_exp, refresh_family=refresh_family))


def purge_codes(session: Session, before: float) -> int:
    """Drop codes expired before `before` (kept a while after expiry to catch late reuse)."""
    result = session.execute(delete(AuthorizationCode)
                             .where(AuthorizationCode.expires_at < before))
    return int(result.rowcount)  # type: ignore[attr-defined]
