"""RFC 7009 token revocation and RFC 7662 token introspection."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio.to_thread
from sqlalchemy.exc import SQLAlchemyError

from authserver import audit
from authserver.clock import Clock
from authserver.errors import InvalidRequest, TemporarilyUnavailable, UnauthorizedClient
from authserver.oauth.token import TokenService
from authserver.people import refresh
from authserver.revocation import DenyList, TokenInspector, deny_token
from authserver.storage.db import Database

INACTIVE: dict[str, Any] = {"active": False}
# RFC 7662 §2.2 members taken from the token as they are.
_INTROSPECTED = ("scope", "client_id", "exp", "iat", "nbf", "sub", "aud", "iss", "jti")


class RevocationService:
    def __init__(
        self, tokens: TokenService, inspector: TokenInspector, denied: DenyList, db: Database,
        clock: Clock,
    ) -> None:
        self.tokens = tokens
        self.inspector = inspector
        self.denied = denied
        self.db = db
        self.clock = clock

    async def revoke(
        self, params: Mapping[str, str], authorization: str | None, client_ip: str | None
    ) -> None:
        """RFC 7009 §2.1. Unknown, malformed, expired and foreign-issuer tokens are answered
        with success (§2.2); a token of another client is refused; the deny-list row and its
        event are committed before success is claimed (503 otherwise, never a fake success)."""
        # A public client revokes its own refresh tokens with its client_id alone.
        client = await self.tokens.authenticate(params, authorization, client_ip,
                                                public_ok=self.tokens.people is not None)
        token = params.get("token")
        if token is None:
            raise InvalidRequest("token is required")
        if token.startswith(refresh.REFRESH_PREFIX):
            await self._revoke_refresh(token, client.client_id, client_ip)
            return
        if client.public:
            raise UnauthorizedClient("A public client may revoke only its refresh tokens")
        claims = self.inspector.verified(token)
        if claims is None or claims["exp"] <= self.clock.now():
            return
        if claims["client_id"] != client.client_id:
            raise UnauthorizedClient("A client may revoke only tokens issued to it")
        jti, exp = str(claims["jti"]), float(claims["exp"])
        try:
            await anyio.to_thread.run_sync(self._deny, jti, client.client_id, exp, client_ip)
        except SQLAlchemyError as exc:
            raise TemporarilyUnavailable("The revocation could not be stored; retry",
                                         detail=type(exc).__name__) from exc
        self.denied.add(jti, exp)  # this instance at once; the others through the event log

    async def _revoke_refresh(self, token: str, client_id: str, client_ip: str | None) -> None:
        """RFC 7009 §2.1: revoking a refresh token revokes its family and the access tokens
        it issued. Unknown tokens are a success; another client's are refused."""
        def run() -> list[tuple[str, float]] | None:
            with self.db.session(write=True) as session:
                family = refresh.family_of(session, token)
                if family is None:
                    return []
                if family[1] != client_id:
                    return None
                return refresh.revoke_family(session, family[0], self.clock.now(),
                                             audit.Actor(f"client:{client_id}", client_ip),
                                             "revoked by the client (RFC 7009)")
        try:
            denied = await anyio.to_thread.run_sync(run)
        except SQLAlchemyError as exc:
            raise TemporarilyUnavailable("The revocation could not be stored; retry",
                                         detail=type(exc).__name__) from exc
        if denied is None:
            raise UnauthorizedClient("A client may revoke only tokens issued to it")
        for jti, exp in denied:
            self.denied.add(jti, exp)

    def _deny(self, jti: str, client_id: str, exp: float, client_ip: str | None) -> None:
        with self.db.session(write=True) as session:
            deny_token(session, jti, client_id, exp, self.clock.now(),
                       audit.Actor(f"client:{client_id}", client_ip))

    async def introspect(
        self, params: Mapping[str, str], authorization: str | None, client_ip: str | None
    ) -> dict[str, Any]:
        """RFC 7662 §2. Any registered client may ask (a resource server is one); an inactive
        token gets exactly {"active": false}, whatever the reason."""
        await self.tokens.authenticate(params, authorization, client_ip)
        token = params.get("token")
        if token is None:
            raise InvalidRequest("token is required")
        claims = await self.inspector.active(token)
        if claims is None:
            return dict(INACTIVE)
        body: dict[str, Any] = {"active": True, "token_type": "Bearer"}
        body.update({k: claims[k] for k in _INTROSPECTED if k in claims})
        return body
