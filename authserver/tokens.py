"""RFC 9068 JWT access tokens."""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from joserfc.errors import JoseError
from joserfc.jws import extract_compact

from authserver.keyring import SigningKey

ACCESS_TOKEN_TYP = "at+jwt"
ID_TOKEN_TYP = "JWT"


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


def mint_id_token(
    signer: SigningKey, *, issuer: str, subject: str, client_id: str, auth_time: float,
    nonce: str | None, claims: Mapping[str, Any], lifetime: int, now: float,
) -> str:
    """An OpenID Connect Core §2 ID token for the person, audience the client."""
    iat = int(now)
    body: dict[str, Any] = {"iss": issuer, "sub": subject, "aud": client_id, "exp": iat + lifetime,
                            "iat": iat, "auth_time": int(auth_time), "azp": client_id}
    if nonce is not None:
        body["nonce"] = nonce
    body.update(claims)
    return signer.sign(body, ID_TOKEN_TYP)


MAX_TOKEN = 8192


def verify_access_token(
    token: str, keys: Mapping[str, SigningKey], issuer: str
) -> dict[str, Any] | None:
    """The claims of an access token this server signed (signature by a published key, `typ`
    at+jwt, our `iss`, the RFC 9068 claims present), else None. Expiry is the caller's call."""
    if not token or len(token) > MAX_TOKEN:
        return None
    try:
        header = extract_compact(token.encode("ascii")).headers()
        key = keys.get(header.get("kid", ""))
        if key is None or header.get("alg") != key.alg or header.get("typ") != ACCESS_TOKEN_TYP:
            return None
        claims = key.verify(token)
    except (JoseError, ValueError, UnicodeError, json.JSONDecodeError, TypeError):
        return None
    if claims.get("iss") != issuer or not isinstance(claims.get("jti"), str) \
            or not isinstance(claims.get("client_id"), str):
        return None
    for name in ("exp", "iat"):
        value = claims.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            return None
    return claims
