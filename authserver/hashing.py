"""High-entropy secrets: generation, digests and constant-time comparison.

Secrets issued here carry >= 256 bits of randomness, so a single SHA-256 is a sound at-rest
digest (DESIGN.md, "Design choices that decide speed"); a slow password hash would cap the token
endpoint at a few dozen requests per second.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

CLIENT_SECRET_PREFIX = "ascs_"
CLIENT_ID_PREFIX = "cli_"
REGISTRATION_TOKEN_PREFIX = "asrat_"
INITIAL_ACCESS_TOKEN_PREFIX = "asiat_"


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


def derive_secret(key: bytes, prefix: str, purpose: str, subject: str) -> str:
    """A secret recomputable from a server key (HMAC-SHA-256, 256 bits), so an identical
    re-registration can answer with the same credentials without storing them in plaintext."""
    mac = hmac.new(key, f"{purpose}\x00{subject}".encode(), hashlib.sha256).digest()
    return prefix + base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def load_or_create_key(path: Path) -> bytes:
    """A 256-bit server key kept in a 0600 file, created once. The file appears whole (written
    aside, then hard-linked into place), so a racing instance never reads half of it."""
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    text = path.read_text(encoding="ascii").strip()
    try:
        key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError as exc:
        raise ValueError(f"{path} is not base64url") from exc
    if len(key) < 32:
        raise ValueError(f"{path} must hold at least 256 bits (base64url)")
    return key
