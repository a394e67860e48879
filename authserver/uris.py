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


LOOPBACK_HOSTS = ("127.0.0.1", "[::1]", "localhost")
_LOOPBACK_NAMES = frozenset({"127.0.0.1", "::1", "localhost"})


def redirect_uri_problem(uri: str) -> str | None:
    """Why `uri` cannot be a redirect URI (OAuth 2.1 §2.3.1, RFC 8252 §7.3), or None: https,
    or http on a loopback host; absolute, no fragment, no user info."""
    if not uri or len(uri) > 2000 or any(ord(c) < 0x21 or ord(c) == 0x7F for c in uri):
        return "is not a valid URL"
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return "is not a valid URL"
    if parts.fragment or "#" in uri:
        return "must not contain a fragment"
    if not parts.hostname:
        return "must be an absolute URL"
    # Browsers read a backslash as "/" (WHATWG URL): "http://evil.example\\@127.0.0.1/" goes
    # to evil.example.
    if "\\" in uri or "@" in parts.netloc:
        return "must not contain user info or backslashes"
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK_NAMES):
        return None
    return "must use https, or http on a loopback address"


def redirect_uri_matches(registered: tuple[str, ...] | list[str], given: str) -> bool:
    """Exact string match (OAuth 2.1 §2.3.1), except that a loopback redirect URI matches on
    any port (RFC 8252 §7.3): native apps listen on a port the system gives them."""
    if given in registered:
        return True
    try:
        parts = urlsplit(given)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme != "http" or port is None or parts.netloc.rsplit(":", 1)[0] \
            not in LOOPBACK_HOSTS:
        return False
    portless = parts._replace(netloc=parts.netloc.rsplit(":", 1)[0]).geturl()
    for uri in registered:
        try:
            reg = urlsplit(uri)
            reg_port = reg.port
        except ValueError:
            continue
        host = reg.netloc.rsplit(":", 1)[0] if reg_port is not None else reg.netloc
        if reg.scheme == "http" and host in LOOPBACK_HOSTS and \
                reg._replace(netloc=host).geturl() == portless:
            return True
    return False
