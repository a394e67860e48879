"""URI checks shared by configuration, client records and the token endpoint."""

from __future__ import annotations

from urllib.parse import urlsplit


def is_resource_uri(value: str) -> bool:
    """An absolute http(s) URI without a fragment (RFC 8707 §2); never raises."""
    if not value or len(value) > 2000 or any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return False
    return parts.scheme in ("https", "http") and bool(parts.hostname) and not parts.fragment
