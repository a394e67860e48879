"""API keys: format, permissions, lifecycle and checking (docs/api-keys.md)."""

from authserver.apikeys.admin import (
    ApiKeySpec,
    ApiKeyUpdate,
    check_spec,
    check_update,
    create_key,
    get_key,
    list_keys,
    load_key,
    revoke_key,
    rotate_key,
    update_key,
)
from authserver.apikeys.format import ENVIRONMENTS, looks_like_key, new_key, parse_key
from authserver.apikeys.permissions import check_permissions, grants, required
from authserver.apikeys.records import ApiKeyRecord
from authserver.apikeys.verify import ApiKeyAuthenticator, ApiKeyCache

__all__ = [
    "ENVIRONMENTS",
    "ApiKeyAuthenticator",
    "ApiKeyCache",
    "ApiKeyRecord",
    "ApiKeySpec",
    "ApiKeyUpdate",
    "check_permissions",
    "check_spec",
    "check_update",
    "create_key",
    "get_key",
    "grants",
    "list_keys",
    "load_key",
    "looks_like_key",
    "new_key",
    "parse_key",
    "required",
    "revoke_key",
    "rotate_key",
    "update_key",
]
