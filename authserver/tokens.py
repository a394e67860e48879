"""RFC 9068 JWT access tokens."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from authserver.keyring import SigningKey

ACCESS_TOKEN_TYP = "at+jwt"


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str = field(repr=False)
    claims: dict[str, Any] = field(repr=False)
    expires_in: int


def mint_access_token(
    signer: SigningKey,
    *,
    issuer: str,
    client_id: str,
    subject: str,
    org_id: str,
    audience: str,
    scopes: tuple[str, ...],
    lifetime: int,
    now: float,
    not_before: float = 0.0,
) -> IssuedToken:
    """Sign an RFC 9068 §2.2 access token with the one active key.

    `not_before` is the client's revocation cutoff: `iat` is never below it, so a token issued
    in the same second as a change is not mistaken for one issued before it.
    """
    # Clamped to one second ahead: a writer whose clock runs fast cannot push iat further.
    iat = max(int(now), min(int(not_before), int(now) + 1))
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "exp": iat + lifetime,
        "iat": iat,
        "jti": secrets.token_urlsafe(16),
        "client_id": client_id,
        "org_id": org_id,
    }
    if scopes:
        claims["scope"] = " ".join(scopes)
    return IssuedToken(signer.sign(claims, ACCESS_TOKEN_TYP), claims, lifetime)
