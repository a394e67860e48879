"""The authorization request (RFC 6749 §4.1.1, OAuth 2.1 §4.1.1, RFC 7636, RFC 8707, OpenID
Connect Core §3.1.2.1), checked before anyone is asked to sign in or consent.

Errors come in two kinds. Before the client and its redirect URI are known to be good, an error
may not be sent to the redirect URI (RFC 6749 §4.1.2.1): it is shown on a page
(`NotRedirectable`). After that, errors go back to the client at its redirect URI, with `state`
and `iss` (RFC 9207), as `Redirectable`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit, urlunsplit

from authserver.cimd import CimdRefused
from authserver.clients import ClientRecord
from authserver.config import Settings
from authserver.errors import (
    Invalid,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    OAuthError,
    UnauthorizedClient,
    UnsupportedResponseType,
)
from authserver.people.codes import valid_challenge
from authserver.scopes import ScopeCatalog, parse_scope
from authserver.uris import is_resource_uri, redirect_uri_matches

# Scopes about the person, which the person grants: any interactive client may ask for them.
IDENTITY_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})
PROMPTS = frozenset({"none", "login", "consent", "select_account"})
MAX_STATE = 2000
MAX_NONCE = 512
ClientLookup = Callable[[str], Awaitable[ClientRecord | None]]


class NotRedirectable(Exception):
    """Shown to the person on a page; never sent to an unverified redirect URI."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Redirectable(Exception):
    """An error response for the client, delivered at its (verified) redirect URI."""

    def __init__(self, error: OAuthError, redirect_uri: str, state: str | None) -> None:
        super().__init__(error.description)
        self.error = error
        self.redirect_uri = redirect_uri
        self.state = state


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    client: ClientRecord
    redirect_uri: str
    scopes: tuple[str, ...]
    resources: tuple[str, ...]
    state: str | None = field(repr=False)
    nonce: str | None = field(repr=False)
    code_challenge: str = field(repr=False)
    prompt: frozenset[str]


def with_params(uri: str, params: Mapping[str, str]) -> str:
    """`uri` with query parameters added, keeping the ones it has (RFC 6749 §3.1.2)."""
    parts = urlsplit(uri)
    query = urlencode(params)
    return urlunsplit(parts._replace(query=f"{parts.query}&{query}" if parts.query else query))


def allowed_scopes(client: ClientRecord, catalog: ScopeCatalog) -> frozenset[str]:
    return (client.scopes | IDENTITY_SCOPES) - catalog.api_key_only


class AuthorizationRequests:
    def __init__(self, settings: Settings, catalog: ScopeCatalog, lookup: ClientLookup) -> None:
        self.settings = settings
        self.catalog = catalog
        self.lookup = lookup
        self.issuer = settings.issuer

    def error_redirect(self, error: Redirectable) -> str:
        params: dict[str, str] = {"error": error.error.error}
        if error.error.description:
            params["error_description"] = error.error.description
        if error.state is not None:
            params["state"] = error.state
        params["iss"] = self.issuer
        return with_params(error.redirect_uri, params)

    async def check(self, params: Mapping[str, str],
                    resources: Sequence[str]) -> AuthorizationRequest:
        client_id = params.get("client_id")
        if not client_id:
            raise NotRedirectable("The request names no client (client_id is missing).")
        if len(client_id) > 2000 or not client_id.isprintable():
            raise NotRedirectable("The client_id is not valid.")
        try:
            client = await self.lookup(client_id)
        except CimdRefused as exc:  # the reason is safe to show (docs/cimd.md)
            raise NotRedirectable(f"The application's metadata document at {client_id} was "
                                  f"not accepted: {exc}") from exc
        if client is None or not client.active:
            raise NotRedirectable("This application is not known to this server, or has been "
                                  "disabled.")
        redirect_uri = self._redirect_uri(client, params.get("redirect_uri"))
        state = params.get("state")

        def fail(error: OAuthError) -> Redirectable:
            return Redirectable(error, redirect_uri, state)

        if state is not None and len(state) > MAX_STATE:
            raise fail(InvalidRequest(f"state is longer than {MAX_STATE} characters"))
        if params.get("response_type") != "code":
            raise fail(UnsupportedResponseType("Only response_type=code is supported"))
        if "authorization_code" not in client.grant_types:
            raise fail(UnauthorizedClient("This client may not use the authorization code flow"))
        if params.get("request") is not None or params.get("request_uri") is not None:
            raise fail(InvalidRequest("Request objects are not supported"))
        response_mode = params.get("response_mode")
        if response_mode not in (None, "query"):
            raise fail(InvalidRequest("Only response_mode=query is supported"))
        challenge = params.get("code_challenge")
        if challenge is None:
            raise fail(InvalidRequest("PKCE is required: send code_challenge with "
                                      "code_challenge_method=S256"))
        if params.get("code_challenge_method") != "S256":
            raise fail(InvalidRequest("code_challenge_method must be S256"))
        if not valid_challenge(challenge):
            raise fail(InvalidRequest("code_challenge must be 43 base64url characters"))
        nonce = params.get("nonce")
        if nonce is not None and len(nonce) > MAX_NONCE:
            raise fail(InvalidRequest(f"nonce is longer than {MAX_NONCE} characters"))
        prompt = frozenset(params.get("prompt", "").split())
        if not prompt <= PROMPTS or ("none" in prompt and len(prompt) > 1):
            raise fail(InvalidRequest("prompt must be none, or any of login consent "
                                      "select_account"))
        resource_list = tuple(dict.fromkeys(resources))
        for resource in resource_list:
            if not is_resource_uri(resource) or resource not in client.resources:
                raise fail(InvalidTarget("This client may not request that resource"))
        scopes = self._scopes(client, params.get("scope"), resource_list, fail)
        return AuthorizationRequest(client, redirect_uri, scopes, resource_list, state, nonce,
                                    challenge, prompt)

    def _redirect_uri(self, client: ClientRecord, given: str | None) -> str:
        registered = client.redirect_uris
        if not registered:
            raise NotRedirectable("This application has no redirect URI registered.")
        if given is None:
            if len(registered) == 1:  # RFC 6749 §3.1.2.3
                return registered[0]
            raise NotRedirectable("The request names no redirect_uri, and the application "
                                  "has several.")
        if not redirect_uri_matches(registered, given):
            raise NotRedirectable("The redirect_uri does not match any registered for this "
                                  "application.")
        return given

    def _scopes(self, client: ClientRecord, scope: str | None, resources: tuple[str, ...],
                fail: Callable[[OAuthError], Redirectable]) -> tuple[str, ...]:
        allowed = allowed_scopes(client, self.catalog)
        for resource in resources:
            accepted = self.catalog.resource_scopes.get(resource)
            if accepted is not None:
                allowed &= accepted | IDENTITY_SCOPES
        if scope is None:
            defaults = tuple(s for s in self.settings.authorization.default_scopes
                             if s in allowed)
            return defaults or tuple(sorted(allowed - IDENTITY_SCOPES))
        try:
            requested = parse_scope(scope)
        except Invalid as exc:
            raise fail(InvalidScope(str(exc))) from exc
        granted = tuple(s for s in requested if s in allowed)
        if requested and not granted:
            raise fail(InvalidScope("None of the requested scopes is allowed for this client"))
        if self.settings.tokens.scope_policy == "strict" and len(granted) != len(requested):
            raise fail(InvalidScope("A requested scope is not allowed for this client"))
        return granted
