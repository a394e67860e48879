"""`authserver.resource`: validate authserver access tokens inside a resource server.

Self-contained on purpose: it imports nothing else of `authserver`, only joserfc and httpx, so
an API can vendor or install it alone. It

- discovers the issuer's metadata (RFC 8414) and fetches the JWKS, honouring `Cache-Control`,
  and refetches on an unknown `kid` at most once per `jwks_refetch_interval`;
- validates RFC 9068 access tokens: `typ` at+jwt, allowed `alg`, signature, `iss`, `aud`,
  `exp`/`nbf` with leeway, the required claims;
- follows the revocation feed (RFC 8936 poll of RFC 8417 SETs) in the background and rejects
  revoked or cut-off tokens; when the feed has not been read for `max_staleness` seconds it
  fails closed (or open, if configured);
- offers a plain API (`await verifier.verify(token, scopes)`) and a pure ASGI middleware that
  answers 401 / 403 with RFC 6750 / RFC 9728 `WWW-Authenticate` challenges.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry, extract_compact, validate_compact

log = logging.getLogger("authserver.resource")
ACCESS_TOKEN_TYP = "at+jwt"
SET_TYP = "secevent+jwt"
CUTOFF_EVENT = "urn:authserver:secevent:client-cutoff"
REVOKED_EVENT = "urn:authserver:secevent:token-revoked"
SUBJECT_CUTOFF_EVENT = "urn:authserver:secevent:subject-cutoff"
REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "jti", "client_id")
_MAX_AGE = re.compile(r"max-age\s*=\s*(\d+)")
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]


class _Registry(JWSRegistry):
    """A registry allowing exactly the configured algorithms (EdDSA without a warning)."""

    def get_alg(self, name: str) -> Any:
        if self.allowed is not None and name not in self.allowed:
            return super().get_alg(name)  # raises: not allowed
        return self.algorithms[name]


@dataclass(frozen=True)
class Settings:
    """What a resource server configures."""

    issuer: str
    audience: str | Sequence[str]
    algorithms: tuple[str, ...] = ("RS256", "PS256", "ES256", "EdDSA")
    leeway: float = 30.0
    jwks_refetch_interval: float = 60.0
    # The feed: a client holding the feed scope. Without it, revocations are not followed.
    feed_client_id: str | None = None
    feed_client_secret: str | None = field(default=None, repr=False)
    poll_interval: float = 1.0
    max_staleness: float = 30.0
    fail_closed: bool = True
    # RFC 9728 metadata URL of this resource server, named in 401 challenges.
    resource_metadata: str | None = None
    timeout: float = 5.0


class TokenError(Exception):
    """Why a token is refused: 401 invalid_token, or 403 insufficient_scope."""

    def __init__(self, description: str, status: int = 401,
                 error: str = "invalid_token", scope: str | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.status = status
        self.error = error
        self.scope = scope


@dataclass(frozen=True)
class AccessToken:
    claims: dict[str, Any] = field(repr=False)

    @property
    def client_id(self) -> str:
        return str(self.claims["client_id"])

    @property
    def subject(self) -> str:
        return str(self.claims["sub"])

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset(str(self.claims.get("scope", "")).split())


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class Verifier:
    """Create once per process; `await start()` before use, `await aclose()` at shutdown."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self._http = http or httpx.AsyncClient(timeout=settings.timeout)
        self._own_http = http is None
        self._registry = _Registry(algorithms=list(settings.algorithms))
        audience = settings.audience
        self._audiences = {audience} if isinstance(audience, str) else set(audience)
        self.metadata: dict[str, Any] = {}
        self._keys: KeySet | None = None
        self._keys_expire = 0.0
        self._keys_fetched = 0.0
        self._key_lock = asyncio.Lock()
        self.denied: dict[str, float] = {}
        self.cutoffs: dict[str, float] = {}
        # (person, client or "" for all of the person's tokens) -> dead before this instant.
        self.subject_cutoffs: dict[tuple[str, str], float] = {}
        self._acks: list[str] = []
        # This process's own position in the feed: a restart or another worker of the same
        # API starts from the history instead of after someone else's acknowledgements.
        self._receiver = "verifier-" + secrets.token_hex(8)
        self.last_feed_ok: float | None = None
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Discover the issuer, load the JWKS, do a first feed poll, then poll in background."""
        url = self.settings.issuer.rstrip("/") + "/.well-known/oauth-authorization-server"
        response = await self._http.get(url)
        response.raise_for_status()
        self.metadata = response.json()
        if self.metadata.get("issuer") != self.settings.issuer:
            raise RuntimeError("the metadata's issuer differs from the configured issuer")
        await self._refresh_keys(force=True)
        if self.settings.feed_client_id:
            await self.poll_feed()
            self._task = asyncio.create_task(self._follow_feed())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._own_http:
            await self._http.aclose()

    # -- keys ---------------------------------------------------------------------------------

    async def _refresh_keys(self, force: bool = False) -> None:
        async with self._key_lock:
            now = self.clock()
            if not force and now < self._keys_expire:
                return
            response = await self._http.get(self.metadata["jwks_uri"])
            response.raise_for_status()
            self._keys = KeySet.import_key_set(response.json())
            match = _MAX_AGE.search(response.headers.get("cache-control", ""))
            self._keys_expire = now + (int(match.group(1)) if match else 300)
            self._keys_fetched = now

    async def _key(self, kid: str) -> Any:
        if self._keys is None or self.clock() >= self._keys_expire:
            await self._refresh_keys()
        assert self._keys is not None
        key = self._find(kid)
        if key is None and self.clock() - self._keys_fetched >= self.settings.jwks_refetch_interval:
            await self._refresh_keys(force=True)  # a key we have not seen: rotated since?
            key = self._find(kid)
        if key is None:
            raise TokenError("The token is signed by an unknown key")
        return key

    def _find(self, kid: str) -> Any:
        assert self._keys is not None
        return next((k for k in self._keys.keys if k.kid == kid), None)

    async def _decode(self, token: str, typ: str) -> dict[str, Any]:
        """Header checks, key, signature, issuer; the JWS is parsed once (joserfc's
        `jwt.decode` would extract it a second time: 20 % of an RS256 verification)."""
        try:
            obj = extract_compact(token.encode("ascii"), registry=self._registry)
        except (JoseError, ValueError, UnicodeError) as exc:
            raise TokenError("The token is not a JWS") from exc
        header = obj.headers()
        if header.get("typ") != typ:
            raise TokenError(f"The token's typ is not {typ}")
        if header.get("alg") not in self.settings.algorithms:
            raise TokenError("The token's algorithm is not allowed")
        key = await self._key(str(header.get("kid", "")))
        try:
            if not validate_compact(obj, key, registry=self._registry):
                raise BadSignatureError()
            claims = json.loads(obj.payload or b"")
        except (JoseError, ValueError) as exc:
            raise TokenError("The token's signature does not verify") from exc
        if not isinstance(claims, dict):
            raise TokenError("The token's payload is not a JSON object")
        if claims.get("iss") != self.settings.issuer:
            raise TokenError("The token is from another issuer")
        return claims

    # -- tokens -------------------------------------------------------------------------------

    async def verify(self, token: str, scopes: Sequence[str] = ()) -> AccessToken:
        """The token's claims if it is valid, unrevoked and carries `scopes`; else TokenError."""
        if not token or len(token) > 8192:
            raise TokenError("The token is missing or too long")
        claims = await self._decode(token, ACCESS_TOKEN_TYP)
        missing = [name for name in REQUIRED_CLAIMS if name not in claims]
        if missing:
            raise TokenError(f"The token lacks {', '.join(missing)}")
        audience = claims["aud"]
        audiences = set(audience) if isinstance(audience, list) else {audience}
        if not audiences & self._audiences:
            raise TokenError("The token is not meant for this resource")
        now = self.clock()
        exp, iat, nbf = (_number(claims.get(k)) for k in ("exp", "iat", "nbf"))
        if exp is None or iat is None or exp <= now - self.settings.leeway:
            raise TokenError("The token has expired")
        if (nbf is not None and nbf > now + self.settings.leeway) or iat > now + \
                self.settings.leeway:
            raise TokenError("The token is not valid yet")
        self._check_revocation(claims, iat, now)
        token_obj = AccessToken(claims)
        needed = [s for s in scopes if s not in token_obj.scopes]
        if needed:
            raise TokenError("The token lacks a required scope", 403, "insufficient_scope",
                             " ".join(scopes))
        return token_obj

    def _check_revocation(self, claims: dict[str, Any], iat: float, now: float) -> None:
        if self.settings.feed_client_id:
            stale = self.last_feed_ok is None or now - self.last_feed_ok > \
                self.settings.max_staleness
            if stale and self.settings.fail_closed:
                raise TokenError("Revocation status is unknown (the feed is unreachable)")
        if claims["jti"] in self.denied:
            raise TokenError("The token has been revoked")
        client_id = str(claims["client_id"])
        if iat < self.cutoffs.get(client_id, 0.0):
            raise TokenError("The token was issued before its client was changed or revoked")
        sub = str(claims["sub"])
        if self.subject_cutoffs and sub != client_id and iat < max(
                self.subject_cutoffs.get((sub, ""), 0.0),
                self.subject_cutoffs.get((sub, client_id), 0.0)):
            raise TokenError("The token was issued before its user was disabled or their "
                             "consent revoked")

    # -- the revocation feed ------------------------------------------------------------------

    async def poll_feed(self) -> int:
        """One RFC 8936 poll: acknowledge what was applied, apply what arrives."""
        endpoint = self.metadata.get("security_event_poll_endpoint")
        if not endpoint:
            raise RuntimeError("the issuer advertises no security_event_poll_endpoint")
        auth = (self.settings.feed_client_id or "", self.settings.feed_client_secret or "")
        response = await self._http.post(endpoint, auth=auth, json={
            "ack": self._acks, "returnImmediately": True, "maxEvents": 1000,
            "receiver": self._receiver})
        response.raise_for_status()
        body = response.json()
        acks: list[str] = []
        for jti, token in body.get("sets", {}).items():
            try:
                claims = await self._decode(token, SET_TYP)
            except TokenError as exc:
                log.warning("ignoring a SET that does not verify: %s", exc.description)
                continue
            if claims.get("aud") != self.settings.feed_client_id:
                continue
            self._apply(claims.get("events", {}))
            acks.append(jti)
        self._acks = acks
        now = self.clock()
        self.denied = {j: e for j, e in self.denied.items() if e > now - self.settings.leeway}
        self.last_feed_ok = now
        return len(acks)

    def _apply(self, payload: dict[str, Any]) -> None:
        revoked = payload.get(REVOKED_EVENT)
        if isinstance(revoked, dict) and isinstance(revoked.get("jti"), str):
            self.denied[revoked["jti"]] = _number(revoked.get("exp")) or math.inf
        cutoff = payload.get(CUTOFF_EVENT)
        if isinstance(cutoff, dict) and isinstance(cutoff.get("client_id"), str):
            after = _number(cutoff.get("tokens_valid_after")) or 0.0
            client_id = cutoff["client_id"]
            self.cutoffs[client_id] = max(self.cutoffs.get(client_id, 0.0), after)
        person = payload.get(SUBJECT_CUTOFF_EVENT)
        if isinstance(person, dict) and isinstance(person.get("sub"), str):
            after = _number(person.get("tokens_valid_after")) or 0.0
            client = person.get("client_id")
            key = (person["sub"], client if isinstance(client, str) else "")
            self.subject_cutoffs[key] = max(self.subject_cutoffs.get(key, 0.0), after)

    async def _follow_feed(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            try:
                await self.poll_feed()
            except (httpx.HTTPError, ValueError, RuntimeError) as exc:
                log.warning("revocation feed poll failed: %s", exc)

    # -- HTTP ---------------------------------------------------------------------------------

    def challenge(self, error: TokenError) -> str:
        """The `WWW-Authenticate` value for a refusal (RFC 6750 §3, RFC 9728 §5.1)."""
        parts = [f'error="{error.error}"',
                 'error_description="' + error.description.replace('"', "'") + '"']
        if error.scope:
            parts.append(f'scope="{error.scope}"')
        if self.settings.resource_metadata:
            parts.append(f'resource_metadata="{self.settings.resource_metadata}"')
        return "Bearer " + ", ".join(parts)


class BearerAuthMiddleware:
    """Pure ASGI middleware: requests need a valid bearer token (with `scopes`); the verified
    token is put at `scope["state"]["access_token"]`."""

    def __init__(self, app: ASGIApp, verifier: Verifier, scopes: Sequence[str] = ()) -> None:
        self.app = app
        self.verifier = verifier
        self.scopes = tuple(scopes)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = next((v.decode("latin-1") for k, v in scope["headers"]
                       if k == b"authorization"), "")
        kind, _, token = header.partition(" ")
        try:
            if kind.lower() != "bearer" or not token.strip():
                raise TokenError("A bearer token is required")
            verified = await self.verifier.verify(token.strip(), self.scopes)
        except TokenError as error:
            await _refuse(send, error, self.verifier.challenge(error))
            return
        scope.setdefault("state", {})["access_token"] = verified
        await self.app(scope, receive, send)


async def _refuse(send: Any, error: TokenError, challenge: str) -> None:
    body = json.dumps({"error": error.error, "error_description": error.description}).encode()
    await send({"type": "http.response.start", "status": error.status, "headers": [
        (b"content-type", b"application/json"), (b"www-authenticate", challenge.encode()),
        (b"cache-control", b"no-store"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
