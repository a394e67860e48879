"""Permissions of API keys (and scopes of access tokens at forward-auth): `resource.action`.

The resource comes from the request path (`/api/v1/invoices/42` → `invoices`: an `api` segment
and a version segment `v<digits>` are skipped) and the action from the method (GET/HEAD → read,
POST → create, PUT/PATCH → update, DELETE → delete). Grants: `*` (everything), `invoices.*`,
`*.read`, `invoices.read`. A named scope of the catalog (e.g. `portal-provision`) is a
permission too; it matches only where a route asks for it by name.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable

from authserver.errors import Invalid

ACTIONS = ("read", "create", "update", "delete")
METHOD_ACTIONS = {"GET": "read", "HEAD": "read", "POST": "create", "PUT": "update",
                  "PATCH": "update", "DELETE": "delete"}
_RESOURCE = r"[a-z0-9][a-z0-9_-]{0,63}"
_PERMISSION = re.compile(rf"^(\*|{_RESOURCE}\.(\*|{'|'.join(ACTIONS)})|\*\.({'|'.join(ACTIONS)}))$")
_VERSION = re.compile(r"^v\d+$")


def check_permissions(values: Iterable[str], named: Collection[str]) -> tuple[str, ...]:
    """The permissions, deduplicated in order; Invalid naming the first bad one."""
    result: list[str] = []
    for value in values:
        if not isinstance(value, str) or not (_PERMISSION.match(value) or value in named):
            raise Invalid(f"permissions: {str(value)[:80]!r} is neither resource.action "
                          "(actions: read create update delete, * wildcards) nor a known scope")
        if value not in result:
            result.append(value)
    return tuple(result)


def required(method: str, path: str) -> tuple[str, str] | None:
    """The (resource, action) a request needs, or None when the method maps to no action."""
    action = METHOD_ACTIONS.get(method.upper())
    if action is None:
        return None
    segments = [s for s in path.split("?", 1)[0].split("/") if s]
    first = 1 if segments and segments[0] == "api" else 0
    if len(segments) > first and segments[first][0] == "v" and _VERSION.match(segments[first]):
        first += 1
    return (segments[first].lower() if len(segments) > first else ""), action


def grants(permissions: Collection[str], resource: str, action: str) -> bool:
    return ("*" in permissions or f"{resource}.{action}" in permissions
            or f"{resource}.*" in permissions or f"*.{action}" in permissions)
