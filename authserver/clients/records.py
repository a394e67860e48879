"""The immutable view of a client that the token path works with, and value checks."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Literal

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from authserver.errors import Invalid
from authserver.storage.models import Client
from authserver.uris import is_resource_uri, redirect_uri_problem

AuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
# Methods the token endpoint accepts (and discovery advertises). "none" is recorded for public
# clients that register for the interactive flow; it never authenticates at /token.
AUTH_METHODS: tuple[AuthMethod, ...] = (
    "client_secret_basic", "client_secret_post", "private_key_jwt",
)
SECRET_METHODS: tuple[AuthMethod, ...] = ("client_secret_basic", "client_secret_post")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


@dataclass(frozen=True, slots=True)
class ClientRecord:
    client_id: str
    org_id: str
    name: str
    auth_method: AuthMethod
    grant_types: tuple[str, ...]
    scopes: frozenset[str]
    ip_allow: tuple[IPNetwork, ...]
    resources: frozenset[str]
    jwks: dict[str, Any] | None
    jwks_uri: str | None
    status: str
    created_at: float
    updated_at: float
    tokens_valid_after: float
    origin: str = "admin"
    last_used_at: float | None = None
    secret_digest: str | None = field(default=None, repr=False)
    # False while the client's organisation is disabled (read with the client on the token path).
    org_active: bool = True
    # Its own rate limits over the configured defaults ({"hourly": ..., "burst": ...}).
    rate_limits: dict[str, str] = field(default_factory=dict)
    # Where the authorization endpoint may send the person back (exact match; RFC 8252 ports).
    redirect_uris: tuple[str, ...] = ()

    @property
    def public(self) -> bool:
        """A public client (token_endpoint_auth_method "none"): no secret, PKCE only."""
        return self.auth_method == "none"

    @property
    def active(self) -> bool:
        return self.status == "active" and self.org_active

    def ip_allowed(self, address: str | None) -> bool:
        return address_allowed(self.ip_allow, address)

    @classmethod
    def from_row(cls, row: Client, org_active: bool = True) -> ClientRecord:
        return cls(
            client_id=row.client_id, org_id=row.org_id, name=row.name,
            auth_method=row.auth_method,  # type: ignore[arg-type]
            grant_types=tuple(row.grant_types), scopes=frozenset(row.scopes),
            ip_allow=tuple(ipaddress.ip_network(c, strict=False) for c in row.ip_allow),
            resources=frozenset(row.resources), jwks=row.jwks, jwks_uri=row.jwks_uri,
            status=row.status, created_at=row.created_at, updated_at=row.updated_at,
            tokens_valid_after=row.tokens_valid_after, origin=row.origin,
            last_used_at=row.last_used_at, secret_digest=row.secret_digest,
            org_active=org_active, rate_limits=dict(row.rate_limits or {}),
            redirect_uris=tuple(row.redirect_uris or ()),
        )

    def public_dict(self) -> dict[str, Any]:
        """Everything an operator may see; never the secret or its digest."""
        return {
            "client_id": self.client_id, "org_id": self.org_id, "name": self.name,
            "token_endpoint_auth_method": self.auth_method,
            "grant_types": list(self.grant_types), "scope": " ".join(sorted(self.scopes)),
            "ip_allow": [str(n) for n in self.ip_allow], "resources": sorted(self.resources),
            "jwks_uri": self.jwks_uri, "jwks": self.jwks, "status": self.status,
            "created_at": self.created_at, "updated_at": self.updated_at,
            "tokens_valid_after": self.tokens_valid_after, "origin": self.origin,
            "last_used_at": self.last_used_at, "rate_limits": self.rate_limits,
            "redirect_uris": list(self.redirect_uris),
        }


def address_allowed(allowlist: tuple[IPNetwork, ...], address: str | None) -> bool:
    """No allowlist allows every address; with one, an unknown address is refused."""
    if not allowlist:
        return True
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in net for net in allowlist)


def check_cidrs(values: list[str]) -> list[str]:
    out = []
    for value in values:
        try:
            out.append(str(ipaddress.ip_network(value.strip(), strict=False)))
        except ValueError as exc:
            raise Invalid(f"ip_allow: {value!r} is not an IP address or CIDR") from exc
    return out


def check_resources(values: list[str]) -> list[str]:
    for value in values:
        if not is_resource_uri(value):
            raise Invalid(
                f"resource: {value!r} must be an absolute http(s) URI without a fragment "
                "(RFC 8707 §2)"
            )
    return sorted(set(values))


def check_redirect_uris(values: tuple[str, ...] | list[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        problem = redirect_uri_problem(value)
        if problem is not None:
            raise Invalid(f"redirect_uri: {value!r} {problem}")
        if value not in out:
            out.append(value)
    return out


def check_jwks_uri(value: str) -> str:
    if not is_resource_uri(value):
        raise Invalid(f"jwks_uri: {value!r} must be an absolute https URL")
    return value


def check_jwks(value: Any) -> dict[str, Any]:
    """A public JWK Set of signing keys; private members are refused."""
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list) or not value["keys"]:
        raise Invalid('jwks: must be a JWK Set, {"keys": [...]} with at least one key')
    for jwk in value["keys"]:
        if not isinstance(jwk, dict):
            raise Invalid("jwks: every key must be a JSON object")
        if _PRIVATE_JWK_MEMBERS & set(jwk):
            raise Invalid("jwks: contains private or symmetric key material; send public keys")
        ops = jwk.get("key_ops")
        if jwk.get("use", "sig") != "sig" or jwk.get("crv") in ("X25519", "X448") or (
            ops is not None and (not isinstance(ops, list) or "verify" not in ops)
        ):
            raise Invalid("jwks: only signature keys are accepted (use \"sig\", not encryption)")
    try:
        KeySet.import_key_set(value)  # type: ignore[arg-type]
    except (JoseError, ValueError, KeyError, TypeError) as exc:
        raise Invalid(f"jwks: not a valid JWK Set ({exc})") from exc
    return value
