"""OAuth clients: records, their administration and the in-process cache."""

from authserver.clients.admin import (
    ClientSpec,
    ClientUpdate,
    create_client,
    cutoff,
    delete_client,
    get_client,
    list_clients,
    load_client,
    rotate_secret,
    set_disabled,
    update_client,
)
from authserver.clients.cache import ClientCache
from authserver.clients.directory import ClientDirectory
from authserver.clients.records import AUTH_METHODS, AuthMethod, ClientRecord

__all__ = [
    "AUTH_METHODS",
    "AuthMethod",
    "ClientCache",
    "ClientDirectory",
    "ClientRecord",
    "ClientSpec",
    "ClientUpdate",
    "create_client",
    "cutoff",
    "delete_client",
    "get_client",
    "list_clients",
    "load_client",
    "rotate_secret",
    "set_disabled",
    "update_client",
]
