"""Client authentication at the token endpoint (RFC 6749 §2.3, RFC 7523 §2.2)."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact

from authserver import hashing
from authserver.clients import AuthMethod, ClientRecord
from authserver.clock import Clock
from authserver.config import Settings
from authserver.errors import InvalidClient, InvalidRequest
from authserver.keyring import jws_registry
from authserver.outbound import JsonFetcher, OutboundError
from authserver.replay import ReplayCache

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")
MAX_CLIENT_ID = 2000  # a metadata-document client's id is its URL
MAX_ASSERTION = 8192
_VERIFY = jws_registry(ASSERTION_ALGORITHMS)
# A jwks_uri is re-fetched for an unknown kid at most this often.
JWKS_REFETCH_INTERVAL = 60.0


@dataclass(frozen=True, slots=True)
class Credentials:
    method: AuthMethod
    client_id: str
    secret: str | None = field(default=None, repr=False)
    assertion: str | None = field(default=None, repr=False)
    assertion_claims: dict[str, Any] | None = field(default=None, repr=False)


def _basic(header: str) -> tuple[str, str]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClient("Unsupported authorization scheme; use Basic", used_basic=True)
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError) as exc:  # ValueError: non-ASCII header text
        raise InvalidClient("Malformed Basic credentials", used_basic=True) from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id:
        raise InvalidClient("Malformed Basic credentials", used_basic=True)
    # RFC 6749 §2.3.1: both parts are form-urlencoded before Basic encoding.
    return (_client_id(unquote(client_id.replace("+", " ")), used_basic=True),
            unquote(secret.replace("+", " ")))


def _client_id(value: str, used_basic: bool = False) -> str:
    """Refuse ids no client can have before they reach a cache or a database."""
    if not 0 < len(value) <= MAX_CLIENT_ID or not value.isprintable():
        raise InvalidClient(used_basic=used_basic)
    return value


def extract_credentials(form: Mapping[str, str], authorization: str | None,
                        public_ok: bool = False) -> Credentials:
    """Which method the client used, refusing mixes (RFC 6749 §2.3: exactly one method).
    With `public_ok` (the people's grants), a bare client_id names a public client."""
    body_id = form.get("client_id")
    body_secret = form.get("client_secret")
    assertion = form.get("client_assertion")
    assertion_type = form.get("client_assertion_type")
    if authorization is not None:
        if body_secret is not None or assertion is not None:
            raise InvalidRequest("Use exactly one client authentication method")
        client_id, secret = _basic(authorization)
        # MCP SDK clients send client_id in the body too: accept it when it matches.
        if body_id is not None and body_id != client_id:
            raise InvalidClient("client_id in the body differs from the Basic credentials",
                                used_basic=True)
        return Credentials("client_secret_basic", client_id, secret=secret)
    if assertion is not None or assertion_type is not None:
        if body_secret is not None:
            raise InvalidRequest("Use exactly one client authentication method")
        if assertion_type != JWT_BEARER:
            raise InvalidClient(f"client_assertion_type must be {JWT_BEARER}")
        if not assertion or len(assertion) > MAX_ASSERTION:
            raise InvalidClient("client_assertion is missing or too long")
        claims = _unverified_claims(assertion)
        subject = claims.get("sub")
        if not isinstance(subject, str):
            raise InvalidClient("client_assertion has no sub")
        _client_id(subject)
        if body_id is not None and body_id != subject:
            raise InvalidClient("client_id differs from the assertion's sub")
        return Credentials("private_key_jwt", subject, assertion=assertion,
                           assertion_claims=claims)
    if body_id is not None and body_secret is not None:
        return Credentials("client_secret_post", _client_id(body_id), secret=body_secret)
    if body_id is not None and public_ok:
        return Credentials("none", _client_id(body_id))
    raise InvalidClient("Client authentication is required")


def _unverified_claims(assertion: str) -> dict[str, Any]:
    try:
        obj = extract_compact(assertion.encode("ascii"))
        claims = json.loads(obj.payload)
    except (JoseError, ValueError, UnicodeError, RecursionError) as exc:
        raise InvalidClient("client_assertion is not a JWT") from exc
    if not isinstance(claims, dict):
        raise InvalidClient("client_assertion is not a JWT")
    return claims


class ClientAuthenticator:
    """Checks presented credentials against a client record."""

    def __init__(
        self, settings: Settings, clock: Clock, replay: ReplayCache, fetcher: JsonFetcher
    ) -> None:
        self.issuer = settings.issuer
        self.token_endpoint = settings.endpoint("/token")
        self.max_lifetime = settings.tokens.max_assertion_lifetime
        self.skew = settings.tokens.clock_skew
        self.clock = clock
        self.replay = replay
        self.fetcher = fetcher
        self._keysets: dict[tuple[str, float], KeySet] = {}

    async def authenticate(
        self, creds: Credentials, client: ClientRecord | None
    ) -> ClientRecord:
        used_basic = creds.method == "client_secret_basic"
        # One public text for every failure below, so it never confirms that a client exists.
        if client is None:
            raise InvalidClient(detail="unknown client", used_basic=used_basic)
        if client.auth_method != creds.method:
            raise InvalidClient(
                detail=f"registered for {client.auth_method}, used {creds.method}",
                used_basic=used_basic,
            )
        if creds.method == "none":
            pass  # a public client: the grant itself is the proof (PKCE, a refresh token)
        elif creds.method == "private_key_jwt":
            await self._check_assertion(client, creds)
        elif client.secret_digest is None or creds.secret is None or not hashing.matches(
            creds.secret, client.secret_digest
        ):
            raise InvalidClient(detail="wrong secret", used_basic=used_basic)
        if not client.active:
            raise InvalidClient(detail="client disabled", used_basic=used_basic)
        return client

    def _parsed(self, cache_key: tuple[str, float], document: Any) -> KeySet:
        """Parse a JWK Set once per client version (or fetched document), not per request."""
        keys = self._keysets.get(cache_key)
        if keys is None:
            try:
                keys = KeySet.import_key_set(document)
            except (JoseError, ValueError, KeyError, TypeError) as exc:
                raise InvalidClient(detail="the client's keys are not a JWK Set") from exc
            if len(self._keysets) > 10_000:
                self._keysets.clear()
            self._keysets[cache_key] = keys
        return keys

    async def _keys(self, client: ClientRecord, refresh: bool) -> KeySet:
        if client.jwks is not None:
            return self._parsed((client.client_id, client.updated_at), client.jwks)
        if client.jwks_uri is None:
            raise InvalidClient(detail="no keys registered")
        try:
            document = await self.fetcher.get(client.jwks_uri, refresh=refresh)
        except OutboundError as exc:
            raise InvalidClient(detail=f"jwks_uri: {exc}") from exc
        fetched = self.fetcher.fetched_at(client.jwks_uri) or self.clock.now()
        return self._parsed((client.jwks_uri, fetched), document)

    async def _verify_signature(self, client: ClientRecord, assertion: str) -> dict[str, Any]:
        try:
            return _decode(assertion, await self._keys(client, refresh=False))
        except JoseError as first:
            fetched = self.fetcher.fetched_at(client.jwks_uri) if client.jwks_uri else None
            if fetched is None or self.clock.now() - fetched < JWKS_REFETCH_INTERVAL:
                raise InvalidClient(detail=f"assertion: {first.error}") from first
        # The client may have rotated its keys since we cached its jwks_uri.
        try:
            return _decode(assertion, await self._keys(client, refresh=True))
        except JoseError as exc:
            raise InvalidClient(detail=f"assertion: {exc.error}") from exc

    async def _check_assertion(self, client: ClientRecord, creds: Credentials) -> None:
        assert creds.assertion is not None
        claims = await self._verify_signature(client, creds.assertion)
        now = self.clock.now()
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        exp, nbf, iat = (_instant(claims.get(k)) for k in ("exp", "nbf", "iat"))
        jti = claims.get("jti")
        problem = None
        if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
            problem = "iss and sub must be the client_id"
        elif not ({self.issuer, self.token_endpoint} & {a for a in audiences
                                                         if isinstance(a, str)}):
            problem = "aud must be the issuer or the token endpoint"
        elif exp is None:
            problem = "exp is required (a finite number)"
        elif exp <= now - self.skew:
            problem = "expired"
        elif exp > now + self.max_lifetime + self.skew:
            problem = "lifetime exceeds tokens.max_assertion_lifetime"
        elif nbf is not None and nbf > now + self.skew:
            problem = "not yet valid"
        elif iat is not None and iat > now + self.skew:
            problem = "issued in the future"
        elif not isinstance(jti, str) or not 0 < len(jti) <= 256:
            problem = "jti is required"
        elif not self.replay.first_use(f"{client.client_id}\x00{jti}", exp + self.skew, now):
            problem = "jti was already used"
        if problem:
            raise InvalidClient(detail=f"assertion: {problem}")


def _instant(value: Any) -> float | None:
    """A NumericDate claim as a finite number, else None (NaN would defeat every check)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float, e.g. 10**400
        return None
    return number if math.isfinite(number) else None


def _decode(assertion: str, keys: KeySet) -> dict[str, Any]:
    """Verify with the key named by `kid`, or, without a `kid`, with each candidate key."""
    try:
        header = extract_compact(assertion.encode("ascii")).headers()
    except (JoseError, ValueError, UnicodeError) as exc:
        raise InvalidClient(detail="assertion is not a compact JWS") from exc
    if "kid" in header or len(keys.keys) == 1:
        return jwt.decode(assertion, keys, registry=_VERIFY).claims
    failure: JoseError | None = None
    for key in keys.keys:
        try:
            return jwt.decode(assertion, key, registry=_VERIFY).claims
        except JoseError as exc:
            failure = exc
    assert failure is not None
    raise failure
