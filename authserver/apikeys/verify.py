"""Checking a presented API key: shape and checksum (no read), then the cached record, the
digest in constant time, state, organisation and IP allowlist. Permissions are the caller's."""

from __future__ import annotations

from authserver import audit, hashing
from authserver.apikeys.admin import load_key
from authserver.apikeys.format import ParsedKey, parse_key
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

    async def authenticate(self, presented: str, client_ip: str | None) -> ApiKeyRecord:
        """The key's record, or an ApiError: 401 invalid/expired (with `details.reason` for an
        IP allowlist mismatch or a disabled organisation), 503 when the store is down. Every
        refusal is noted for the audit log (by key id, never the key)."""
        parsed = parse_key(presented, self.prefix)
        try:
            return await self._check(presented, parsed, client_ip)
        except ApiError as exc:
            if exc.status == 401:
                self.failures.note("api_key.authenticate",
                                   parsed.key_id if parsed else "malformed", self.clock.now(),
                                   client_ip, exc.detail or str(exc.details.get("reason") or
                                                                 exc.code))
            raise

    async def _check(self, presented: str, parsed: ParsedKey | None, client_ip: str | None
                     ) -> ApiKeyRecord:
        if parsed is None:
            raise invalid_api_key(detail="malformed")
        try:
            record = await self.keys.get(parsed.key_id)
        except TemporarilyUnavailable as exc:
            raise unavailable(exc.description) from exc
        if record is None or not hashing.matches(presented, record.digest):
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
