"""Checking a presented API key: shape and checksum (no read), then the cached record, the
digest in constant time, state, organisation and IP allowlist. Permissions are the caller's."""

from __future__ import annotations

import hmac

from authserver import audit, hashing
from authserver.apikeys.admin import load_key
from authserver.apikeys.format import ParsedKey, checksum_matches, key_shape
from authserver.apikeys.records import ApiKeyRecord
from authserver.cache import CachedDirectory, VersionedCache
from authserver.clock import Clock
from authserver.errors import (
    ApiError,
    TemporarilyUnavailable,
    expired_api_key,
    invalid_api_key,
    unavailable,
)
from authserver.storage.db import Database

CHECKSUMMED = 10_000  # digests of checksummed keys remembered (then forgotten at once)


class ApiKeyCache(VersionedCache[ApiKeyRecord]):
    pass


class ApiKeyDirectory(CachedDirectory[ApiKeyRecord]):
    what = "API key"

    def _load(self, key: str) -> ApiKeyRecord | None:
        with self.db.session() as session:
            return load_key(session, key)


class ApiKeyAuthenticator:
    def __init__(self, db: Database, cache: ApiKeyCache, prefix: str, clock: Clock,
                 failures: audit.FailureLog | None = None) -> None:
        self.keys = ApiKeyDirectory(db, cache)
        self.prefix = prefix
        self.clock = clock
        self.failures = failures or audit.FailureLog()
        self._checksummed: set[str] = set()  # digests of keys whose checksum matched

    async def authenticate(self, presented: str, client_ip: str | None) -> ApiKeyRecord:
        """The key's record, or an ApiError: 401 invalid/expired (with `details.reason` for an
        IP allowlist mismatch or a disabled organisation), 503 when the store is down. Every
        refusal is noted for the audit log (by key id, never the key)."""
        parsed = key_shape(presented, self.prefix)
        digest = hashing.digest(presented) if parsed is not None else ""
        if parsed is not None and digest not in self._checksummed:
            # The checksum (a CRC-32 in base62, ~1.5 µs) once per distinct key: it keeps
            # mistyped and made-up keys from reaching the store, and a key presented before has
            # passed it. Remembered by digest (what the store holds too), never the key.
            if checksum_matches(presented):
                if len(self._checksummed) >= CHECKSUMMED:
                    self._checksummed.clear()
                self._checksummed.add(digest)
            else:
                parsed = None
        try:
            return await self._check(digest, parsed, client_ip)
        except ApiError as exc:
            if exc.status == 401:
                self.failures.note("api_key.authenticate",
                                   parsed.key_id if parsed else "malformed", self.clock.now(),
                                   client_ip, exc.detail or str(exc.details.get("reason") or
                                                                 exc.code))
            raise

    async def _check(self, digest: str, parsed: ParsedKey | None, client_ip: str | None
                     ) -> ApiKeyRecord:
        if parsed is None:
            raise invalid_api_key(detail="malformed")
        try:
            record = await self.keys.get(parsed.key_id)
        except TemporarilyUnavailable as exc:
            raise unavailable(exc.description) from exc
        if record is None or not hmac.compare_digest(digest, record.digest):
            raise invalid_api_key(detail=f"unknown {parsed.key_id}")
        state = record.state(self.clock.now())
        if state == "expired":
            raise expired_api_key()
        if state != "active":
            raise invalid_api_key("The API key has been revoked", detail=f"revoked {record.id}")
        if not record.org_active:
            raise invalid_api_key("The API key's organisation is disabled",
                                  "organization_disabled")
        if not record.ip_allowed(client_ip):
            raise invalid_api_key("The API key may not be used from this address",
                                  "ip_whitelist_mismatch")
        return record


__all__ = ["ApiError", "ApiKeyAuthenticator", "ApiKeyCache", "ApiKeyDirectory"]
