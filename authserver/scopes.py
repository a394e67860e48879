"""Scope syntax (RFC 6749 §3.3), the scope catalog and the scope policy (DESIGN.md)."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable

from authserver.config import ScopePolicy, Settings
from authserver.errors import Invalid, InvalidScope

# scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")


def parse_scope(value: str) -> tuple[str, ...]:
    """Split a scope parameter; raises Invalid on a malformed token. Keeps first-seen order."""
    tokens: list[str] = []
    for token in value.split(" "):
        if not token:
            continue
        if not _SCOPE_TOKEN.match(token):
            raise Invalid("scope contains characters RFC 6749 section 3.3 does not allow")
        if token not in tokens:
            tokens.append(token)
    return tuple(tokens)


class ScopeCatalog:
    """The configured scopes; those flagged `api_key_only` never reach an OAuth client."""

    def __init__(self, settings: Settings) -> None:
        self.descriptions = {s.name: s.description for s in settings.scopes}
        self.api_key_only = frozenset(s.name for s in settings.scopes if s.api_key_only)
        self.resource_scopes = {
            r.identifier: frozenset(r.scopes) for r in settings.resources if r.scopes
        }
        self.resources = frozenset(r.identifier for r in settings.resources)

    def oauth_scopes(self) -> list[str]:
        """Scopes an OAuth client may hold, for discovery's `scopes_supported`."""
        return sorted(name for name in self.descriptions if name not in self.api_key_only)

    def check_client_scopes(self, scopes: Iterable[str]) -> tuple[str, ...]:
        """Validate scopes given to a client; api_key_only ones are refused."""
        checked = parse_scope(" ".join(scopes))
        forbidden = sorted(set(checked) & self.api_key_only)
        if forbidden:
            raise Invalid(
                f"scope {', '.join(forbidden)} is API-key only and cannot be given to an "
                "OAuth client"
            )
        return checked


def grant_scopes(
    requested: tuple[str, ...] | None,
    allowed: Collection[str],
    policy: ScopePolicy,
) -> tuple[str, ...]:
    """The scopes a token gets under the policy (DESIGN.md "Scope policy")."""
    if policy == "client" or requested is None:
        return tuple(sorted(allowed))
    granted = tuple(s for s in requested if s in allowed)
    if policy == "strict" and len(granted) != len(requested):
        refused = " ".join(s for s in requested if s not in allowed)
        raise InvalidScope(f"Scope not allowed for this client: {refused}")
    if not granted:
        raise InvalidScope("None of the requested scopes is allowed for this client")
    return granted
