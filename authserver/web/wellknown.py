"""Discovery documents (RFC 8414, OpenID Discovery, RFC 9728) and the JWKS (RFC 7517).

Documents are serialised once at start (config does not change while running); the JWKS bytes
and ETag come pre-built from the keyring snapshot.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from authserver.clients import AUTH_METHODS
from authserver.clock import Clock
from authserver.config import Settings
from authserver.feed import CUTOFF_EVENT, REVOKED_EVENT, SUBJECT_CUTOFF_EVENT
from authserver.keyring import Keyring
from authserver.oauth.authorize import IDENTITY_SCOPES, PROMPTS
from authserver.oauth.client_auth import ASSERTION_ALGORITHMS
from authserver.oauth.token import PERSON_GRANTS
from authserver.scopes import ScopeCatalog
from authserver.web.feed import FEED_PATH

JWKS_PATH = "/.well-known/jwks.json"
USERINFO_PATH = "/userinfo"


def authorization_server_metadata(settings: Settings, catalog: ScopeCatalog) -> dict[str, Any]:
    """RFC 8414 §2. Only what works is advertised."""
    doc: dict[str, Any] = {
        "issuer": settings.issuer,
        # Required by RFC 8414 and the MCP SDK's model; with [authorization] off it answers
        # unsupported_response_type, hence the empty response_types_supported then.
        "authorization_endpoint": settings.endpoint("/authorize"),
        "token_endpoint": settings.endpoint("/token"),
        "jwks_uri": settings.endpoint(JWKS_PATH),
        "response_types_supported": [],
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "revocation_endpoint": settings.endpoint("/revoke"),
        "revocation_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "revocation_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "introspection_endpoint": settings.endpoint("/introspect"),
        "introspection_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "introspection_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
    }
    # RFC 8936 poll delivery of our RFC 8417 SETs (docs/resource-servers.md).
    doc["security_event_poll_endpoint"] = settings.endpoint(FEED_PATH)
    doc["security_event_types_supported"] = [CUTOFF_EVENT, REVOKED_EVENT]
    if settings.authorization.enabled:
        doc["security_event_types_supported"].append(SUBJECT_CUTOFF_EVENT)
        doc.update(people_metadata(settings))
    if settings.registration.policy != "closed":
        doc["registration_endpoint"] = settings.endpoint("/register")
    scopes = catalog.oauth_scopes()
    if settings.authorization.enabled:
        scopes = sorted(set(scopes) | IDENTITY_SCOPES)
    if scopes:
        doc["scopes_supported"] = scopes
    return doc


def people_metadata(settings: Settings) -> dict[str, Any]:
    """What the authorization code flow and OpenID Connect add (RFC 8414 §2, RFC 9207 §3,
    RFC 7636 §6.2, OpenID Connect Discovery §3)."""
    doc: dict[str, Any] = {
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": sorted({"client_credentials", *PERSON_GRANTS}),
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        "token_endpoint_auth_methods_supported": [*AUTH_METHODS, "none"],
        "userinfo_endpoint": settings.endpoint(USERINFO_PATH),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [settings.signing.algorithm],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "azp",
                             "name", "preferred_username", "email", "email_verified"],
        "prompt_values_supported": sorted(PROMPTS),
    }
    if settings.cimd.enabled:
        doc["client_id_metadata_document_supported"] = True
    return doc


def protected_resource_metadata(settings: Settings, catalog: ScopeCatalog) -> dict[str, Any]:
    """RFC 9728 §2 for the server's own APIs."""
    doc: dict[str, Any] = {
        "resource": settings.issuer,
        "authorization_servers": [settings.issuer],
        "bearer_methods_supported": ["header"],
    }
    scopes = catalog.oauth_scopes()
    if scopes:
        doc["scopes_supported"] = scopes
    return doc


class WellKnown:
    def __init__(
        self, settings: Settings, catalog: ScopeCatalog, keyring: Keyring, clock: Clock
    ) -> None:
        self._as = orjson.dumps(authorization_server_metadata(settings, catalog))
        self._pr = orjson.dumps(protected_resource_metadata(settings, catalog))
        self._max_age = settings.signing.jwks_max_age
        self._keyring = keyring
        self._clock = clock

    def _bytes(self, body: bytes) -> Response:
        return Response(body, 200, {"cache-control": "public, max-age=300"}, "application/json")

    async def authorization_server(self, request: Request) -> Response:
        return self._bytes(self._as)

    async def protected_resource(self, request: Request) -> Response:
        return self._bytes(self._pr)

    async def jwks(self, request: Request) -> Response:
        snap = self._keyring.snapshot(self._clock.now())
        headers = {"cache-control": f"public, max-age={self._max_age}", "etag": snap.etag}
        if request.headers.get("if-none-match") == snap.etag:
            return Response(None, 304, headers)
        return Response(snap.jwks, 200, headers, "application/jwk-set+json")
