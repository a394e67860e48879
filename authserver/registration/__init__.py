"""Dynamic client registration (RFC 7591), its management (RFC 7592), initial access tokens
and the reaping of unused self-registered clients."""

from authserver.registration.access_tokens import (
    ID_PREFIX,
    AccessTokenView,
    NewAccessToken,
    create_access_token,
    list_access_tokens,
    revoke_access_token,
)
from authserver.registration.listing import RegisteredClient, list_registered
from authserver.registration.metadata import ClientMetadata, parse_metadata
from authserver.registration.reaper import reap, stale_clients
from authserver.registration.service import ClientInformation, Origin, Registrar

__all__ = [
    "ID_PREFIX",
    "AccessTokenView",
    "ClientInformation",
    "ClientMetadata",
    "NewAccessToken",
    "Origin",
    "RegisteredClient",
    "Registrar",
    "create_access_token",
    "list_access_tokens",
    "list_registered",
    "parse_metadata",
    "reap",
    "revoke_access_token",
    "stale_clients",
]
