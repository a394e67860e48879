"""RFC 7591 §2 client metadata: checked member by member into one typed value.

Unknown members are ignored (RFC 7591 §2); a JSON `null` counts as absent. Every refusal names
the member, as `invalid_client_metadata` or `invalid_redirect_uri` (RFC 7591 §3.2.2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

from authserver.clients.admin import check_key_source
from authserver.clients.records import AUTH_METHODS, AuthMethod
from authserver.errors import Invalid, InvalidClientMetadata, InvalidRedirectUri
from authserver.scopes import parse_scope
from authserver.uris import redirect_uri_problem

# What a client may register: client_credentials works now; the interactive grants are
# recorded for the authorization-code flow.
GRANT_TYPES = ("client_credentials", "authorization_code", "refresh_token")
RESPONSE_TYPES = ("code",)
APPLICATION_TYPES = ("web", "native")
REGISTRABLE_METHODS: tuple[AuthMethod, ...] = (*AUTH_METHODS, "none")
_ALWAYS = ("grant_types", "response_types")
MAX_URL = 2000
MAX_TEXT = 200
MAX_ITEMS = 20


@dataclass(frozen=True, slots=True)
class ClientMetadata:
    """The metadata as accepted, with RFC 7591 defaults filled in."""

    client_name: str | None
    grant_types: tuple[str, ...]
    response_types: tuple[str, ...]
    redirect_uris: tuple[str, ...]
    token_endpoint_auth_method: AuthMethod
    scope: tuple[str, ...] | None
    jwks: dict[str, Any] | None
    jwks_uri: str | None
    contacts: tuple[str, ...]
    application_type: str
    software_id: str | None
    software_version: str | None
    client_uri: str | None
    logo_uri: str | None
    tos_uri: str | None
    policy_uri: str | None

    def identity(self) -> dict[str, Any]:
        """`stored()` with set-like arrays sorted: what the idempotency rule compares."""
        return {k: sorted(v) if isinstance(v, list) else v for k, v in self.stored().items()}

    def stored(self) -> dict[str, Any]:
        """As JSON (for the store, the responses and the idempotency key): absent members and
        empty optional lists left out; grant_types and response_types always present."""
        data = asdict(self)
        data["scope"] = None if self.scope is None else " ".join(self.scope)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()
                if v is not None and (v != () or k in _ALWAYS)}


def _text(body: Mapping[str, Any], name: str, limit: int = MAX_TEXT) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidClientMetadata(f"{name}: must be a string")
    if not value.strip() or len(value) > limit or not value.isprintable():
        raise InvalidClientMetadata(f"{name}: must be 1 to {limit} printable characters")
    return value


def _texts(body: Mapping[str, Any], name: str, limit: int = MAX_TEXT) -> tuple[str, ...] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise InvalidClientMetadata(f"{name}: must be an array of at most {MAX_ITEMS} strings")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item or len(item) > limit or not item.isprintable():
            raise InvalidClientMetadata(
                f"{name}: every item must be a string of 1 to {limit} printable characters")
        if item not in out:
            out.append(item)
    return tuple(out)


def _choices(
    body: Mapping[str, Any], name: str, allowed: tuple[str, ...]
) -> tuple[str, ...] | None:
    values = _texts(body, name)
    if values is not None:
        unknown = [v for v in values if v not in allowed]
        if unknown:
            raise InvalidClientMetadata(
                f"{name}: {unknown[0]!r} is not supported (supported: {', '.join(allowed)})")
    return values


def _split(value: str) -> SplitResult | None:
    """The URL's parts, or None when Python cannot parse it (bad IPv6 literal or port)."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return None
    return parts


def _web_url(body: Mapping[str, Any], name: str) -> str | None:
    value = _text(body, name, MAX_URL)
    if value is not None:
        parts = _split(value)
        if parts is None or parts.scheme not in ("https", "http") or not parts.hostname:
            raise InvalidClientMetadata(f"{name}: must be an absolute http(s) URL")
    return value


def check_redirect_uri(uri: str) -> str:
    """RFC 7591 §2 / OAuth 2.1 §2.3.1: https, or http on a loopback host (RFC 8252 §7.3);
    absolute, without a fragment or user info."""
    problem = redirect_uri_problem(uri)
    if problem is not None:
        raise InvalidRedirectUri(f"redirect_uris: {uri!r} {problem}")
    return uri


def parse_metadata(body: Mapping[str, Any]) -> ClientMetadata:
    """Check a registration (or RFC 7592 update) request body."""
    redirect_uris = _texts(body, "redirect_uris", MAX_URL) or ()
    for uri in redirect_uris:
        check_redirect_uri(uri)
    grants = _choices(body, "grant_types", GRANT_TYPES)
    if grants is None:
        grants = ("authorization_code",)  # RFC 7591 §2 default
    responses = _choices(body, "response_types", RESPONSE_TYPES)
    if responses is None:
        responses = ("code",) if "authorization_code" in grants else ()
    # RFC 7591 §2.1: grant_types and response_types must agree.
    if ("authorization_code" in grants) != ("code" in responses):
        raise InvalidClientMetadata(
            'grant_types and response_types: "authorization_code" and "code" go together '
            "(RFC 7591 section 2.1)")
    if "authorization_code" in grants and not redirect_uris:
        raise InvalidRedirectUri("redirect_uris: required for the authorization_code grant")
    method = _text(body, "token_endpoint_auth_method") or "client_secret_basic"
    if method not in REGISTRABLE_METHODS:
        raise InvalidClientMetadata(
            f"token_endpoint_auth_method: {method!r} is not supported (supported: "
            f"{', '.join(REGISTRABLE_METHODS)})")
    if method == "none" and "client_credentials" in grants:
        raise InvalidClientMetadata(
            'token_endpoint_auth_method: "none" (a public client) cannot use client_credentials')
    jwks = body.get("jwks")
    jwks_uri = _text(body, "jwks_uri", MAX_URL)
    try:
        check_key_source(method, jwks, jwks_uri, REGISTRABLE_METHODS)
    except Invalid as exc:
        raise InvalidClientMetadata(str(exc)) from exc
    scope_text = _text(body, "scope", 4000)
    try:
        scope = None if scope_text is None else parse_scope(scope_text)
    except Invalid as exc:
        raise InvalidClientMetadata(f"scope: {exc}") from exc
    application_type = _text(body, "application_type") or "web"
    if application_type not in APPLICATION_TYPES:
        raise InvalidClientMetadata('application_type: must be "web" or "native"')
    return ClientMetadata(
        client_name=_text(body, "client_name"),
        grant_types=grants,
        response_types=responses,
        redirect_uris=redirect_uris,
        token_endpoint_auth_method=method,
        scope=scope,
        jwks=jwks,
        jwks_uri=jwks_uri,
        contacts=_texts(body, "contacts", 254) or (),
        application_type=application_type,
        software_id=_text(body, "software_id"),
        software_version=_text(body, "software_version"),
        client_uri=_web_url(body, "client_uri"),
        logo_uri=_web_url(body, "logo_uri"),
        tos_uri=_web_url(body, "tos_uri"),
        policy_uri=_web_url(body, "policy_uri"),
    )
