"""The token endpoint's grant logic (RFC 6749 §4.4, RFC 8707, RFC 9068).

No database write and no slow hash: the client comes from the in-process cache (one indexed
read on a miss), the secret check is one SHA-256, the signature uses the one active key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from authserver import audit
from authserver.cimd import CimdRefused, MetadataDocuments
from authserver.clients import ClientDirectory, ClientRecord
from authserver.clients.usage import UsageTracker
from authserver.clock import Clock
from authserver.config import Settings
from authserver.errors import (
    Invalid,
    InvalidClient,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    TemporarilyUnavailable,
    TooManyRequests,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from authserver.keyring import Keyring
from authserver.metrics import IssuedTokens
from authserver.oauth.client_auth import ClientAuthenticator, extract_credentials
from authserver.oauth.grants import PersonGrants
from authserver.ratelimit import Limits, Verdict, rate_key
from authserver.scopes import ScopeCatalog, grant_scopes, parse_scope
from authserver.tokenrate import TokenRate
from authserver.tokens import IssuedToken, mint_access_token
from authserver.uris import is_resource_uri

PERSON_GRANTS = frozenset({"authorization_code", "refresh_token"})


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """The token request's form, parsed once (repeated parameters already refused)."""

    params: Mapping[str, str] = field(repr=False)
    resources: Sequence[str]
    authorization: str | None = field(repr=False)
    client_ip: str | None


class TokenService:
    def __init__(
        self, settings: Settings, clock: Clock, keyring: Keyring, clients: ClientDirectory,
        authenticator: ClientAuthenticator, catalog: ScopeCatalog, usage: UsageTracker,
        limits: Limits, failures: audit.FailureLog,
    ) -> None:
        self.settings = settings
        self.issuer = settings.issuer
        self.lifetime = settings.tokens.access_token_lifetime
        self.policy = settings.tokens.scope_policy
        self.default_audience = settings.default_audience
        self.clock = clock
        self.keyring = keyring
        self.clients = clients
        self.authenticator = authenticator
        self.catalog = catalog
        self.usage = usage
        self.limits = limits
        self.failures = failures
        self.rate = TokenRate()  # tokens per minute in this process, for the dashboard
        self.issued = IssuedTokens(settings.metrics.client_labels)  # Prometheus
        self.supported = frozenset({"client_credentials"})
        self.people: PersonGrants | None = None
        self.documents: MetadataDocuments | None = None

    def enable_people(self, people: PersonGrants, documents: MetadataDocuments | None) -> None:
        """Serve the authorization_code and refresh_token grants (`[authorization]`), and
        metadata-document clients (`[cimd]`)."""
        self.people = people
        self.documents = documents
        self.supported = self.supported | PERSON_GRANTS

    async def lookup(self, client_id: str, explain: bool = False) -> ClientRecord | None:
        """A client by id: a registered one, or one described by its metadata document (with
        `explain`, a refused document raises `CimdRefused` with its reason)."""
        if self.documents is not None and self.documents.handles(client_id):
            try:
                return await self.documents.client(client_id)
            except CimdRefused:
                if explain:
                    raise
                return None
        return await self.clients.get(client_id)

    async def issue(self, request: TokenRequest) -> dict[str, Any]:
        params = request.params
        grant_type = params.get("grant_type")
        if grant_type is None:
            raise InvalidRequest("grant_type is required")
        _enforce(await self.limits.address.check(rate_key(request.client_ip), stats=False))
        client = await self.authenticate(params, request.authorization, request.client_ip,
                                         public_ok=grant_type in PERSON_GRANTS)
        _enforce(await self.limits.client.check(
            client.client_id, self.limits.client_items(client.rate_limits), stats=False))
        _enforce(await self.limits.organization.check(client.org_id, stats=False))
        if grant_type not in self.supported:
            raise UnsupportedGrantType("This grant_type is not supported")
        # (A public client never holds client_credentials: the domain refuses that pairing.)
        if grant_type not in client.grant_types:
            raise UnauthorizedClient(f"This client may not use the {grant_type} grant")
        if grant_type in PERSON_GRANTS and self.people is not None:
            answer = await self.people.exchange(grant_type, client, params, request.resources,
                                                request.client_ip)
            self.usage.touch(client.client_id, self.clock.now())
            self.rate.bump(self.clock.now())
            self.issued.inc(client.client_id, grant_type)
            return answer
        audience, allowed = self._audience(client, request.resources)
        allowed = allowed - self.catalog.api_key_only  # also if flagged after the client was made
        scopes = self._scopes(params.get("scope"), allowed)
        now = self.clock.now()
        signer = self.keyring.snapshot(now).signer
        if signer is None:
            raise TemporarilyUnavailable("No signing key is active", detail="no active key")
        issued: IssuedToken = mint_access_token(
            signer, issuer=self.issuer, client_id=client.client_id, subject=client.client_id,
            org_id=client.org_id, audience=audience, scopes=scopes, lifetime=self.lifetime,
            now=now, not_before=client.tokens_valid_after,
        )
        self.usage.touch(client.client_id, now)
        self.rate.bump(now)
        self.issued.inc(client.client_id, grant_type)
        body: dict[str, Any] = {
            "access_token": issued.token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
        }
        if scopes:
            body["scope"] = " ".join(scopes)
        return body

    async def authenticate(
        self, params: Mapping[str, str], authorization: str | None, client_ip: str | None,
        public_ok: bool = False,
    ) -> ClientRecord:
        """RFC 6749 §2.3 client authentication, as every client-authenticated endpoint does
        it (token, revocation, introspection), including the client's IP allowlist. With
        `public_ok`, a public client names itself with client_id alone."""
        creds = extract_credentials(params, authorization, public_ok)
        found = await self.lookup(creds.client_id)
        try:
            client = await self.authenticator.authenticate(creds, found)
            if not client.ip_allowed(client_ip):
                raise InvalidClient(
                    "Client authentication failed: this address is not on the client's "
                    "allowlist", detail=f"ip {client_ip} not allowed",
                    used_basic=creds.method == "client_secret_basic",
                )
        except InvalidClient as exc:
            self.failures.note("client.authenticate", creds.client_id, self.clock.now(),
                               client_ip, exc.detail or exc.description,
                               found.org_id if found else None)
            raise
        return client

    def _audience(
        self, client: ClientRecord, resources: Sequence[str]
    ) -> tuple[Any, frozenset[str]]:
        """RFC 8707: `aud` from `resource`, and the scopes that every named resource accepts."""
        if not resources:
            return self.default_audience, client.scopes
        allowed = client.scopes
        resources = list(dict.fromkeys(resources))
        for resource in resources:
            if not is_resource_uri(resource):
                raise InvalidTarget("resource must be an absolute URI without a fragment")
            if resource not in client.resources:
                raise InvalidTarget("This client may not request tokens for that resource")
            accepted = self.catalog.resource_scopes.get(resource)
            if accepted is not None:
                allowed = allowed & accepted
        audience = resources[0] if len(resources) == 1 else list(resources)
        return audience, allowed

    def _scopes(self, scope: str | None, allowed: frozenset[str]) -> tuple[str, ...]:
        if scope is None:
            requested = None
        else:
            try:
                requested = parse_scope(scope)
            except Invalid as exc:
                raise InvalidScope(str(exc)) from exc
        return grant_scopes(requested or None, allowed, self.policy)


def _enforce(verdict: Verdict) -> None:
    if verdict.retry_after is not None:
        raise TooManyRequests(f"Too many token requests ({verdict.name} limit); retry in "
                              f"{verdict.retry_after} s", verdict.retry_after)
