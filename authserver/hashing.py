"""High-entropy secrets: generation, digests and constant-time comparison.

Secrets issued here carry >= 256 bits of randomness, so a single SHA-256 is a sound at-rest
digest (DESIGN.md, "Design choices that decide speed"); a slow password hash would cap the token
endpoint at a few dozen requests per second.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

CLIENT_SECRET_PREFIX = "ascs_"
CLIENT_ID_PREFIX = "cli_"


def new_client_id() -> str:
    return CLIENT_ID_PREFIX + secrets.token_hex(12)


def new_secret(prefix: str) -> str:
    """A prefixed secret with 256 bits of randomness (base64url, 43 characters)."""
    return prefix + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def matches(secret: str, stored_digest: str) -> bool:
    """Constant-time check of a presented secret against its stored digest."""
    return hmac.compare_digest(digest(secret), stored_digest)
