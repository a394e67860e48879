"""The grants of people's flows at the token endpoint: `authorization_code` (RFC 6749 §4.1.3,
OAuth 2.1 §4.1.3, RFC 7636 §4.6) and `refresh_token` (RFC 6749 §6, OAuth 2.1 §4.3).

Unlike client_credentials these write to the store (a code is used up, a refresh token is
rotated), in one transaction with the tokens they issue. A code or a rotated refresh token
presented again revokes what it issued.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from authserver import audit
from authserver.clients import ClientRecord
from authserver.clock import Clock
from authserver.config import Settings
from authserver.errors import (
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    OAuthError,
    TemporarilyUnavailable,
)
from authserver.keyring import Keyring, SigningKey
from authserver.people import codes, refresh
from authserver.revocation import DenyList, deny_token, stored_subject_cutoff
from authserver.scopes import parse_scope
from authserver.storage.db import Database
from authserver.storage.models import User
from authserver.tokens import mint_access_token, mint_id_token


@dataclass(frozen=True, slots=True)
class Issued:
    body: dict[str, Any]


def person_claims(user: User, scopes: Sequence[str]) -> dict[str, Any]:
    """OpenID Connect Core §5.4: the standard claims the scopes ask for, where known."""
    claims: dict[str, Any] = {}
    if "profile" in scopes:
        claims["name"] = user.name or user.username
        claims["preferred_username"] = user.username
    if "email" in scopes and user.email:
        claims["email"] = user.email
        claims["email_verified"] = bool(user.email_verified)
    return claims


class PersonGrants:
    def __init__(self, settings: Settings, clock: Clock, keyring: Keyring, db: Database,
                 denied: DenyList) -> None:
        self.settings = settings
        self.issuer = settings.issuer
        self.lifetime = settings.tokens.access_token_lifetime
        self.default_audience = settings.default_audience
        self.flow = settings.authorization
        self.clock = clock
        self.keyring = keyring
        self.db = db
        self.denied = denied

    async def exchange(self, grant_type: str, client: ClientRecord, params: Mapping[str, str],
                       resources: Sequence[str], client_ip: str | None) -> dict[str, Any]:
        now = self.clock.now()
        signer = self.keyring.snapshot(now).signer
        if signer is None:
            raise TemporarilyUnavailable("No signing key is active", detail="no active key")
        actor = audit.Actor(f"client:{client.client_id}", client_ip, org_id=client.org_id)
        if grant_type == "authorization_code":
            code, verifier = params.get("code"), params.get("code_verifier")
            if not code:
                raise InvalidRequest("code is required")
            if not verifier:
                raise InvalidRequest("code_verifier is required (PKCE)")

            def work(session: Session) -> Issued | OAuthError:
                return self._code(session, signer, client, code, verifier,
                                  params.get("redirect_uri"), resources, now, actor)
        else:
            token = params.get("refresh_token")
            if not token:
                raise InvalidRequest("refresh_token is required")

            def work(session: Session) -> Issued | OAuthError:
                return self._refresh(session, signer, client, token, params.get("scope"),
                                     resources, now, actor)

        def run() -> Issued | OAuthError:
            with self.db.session(write=True) as session:
                return work(session)
        try:
            outcome = await anyio.to_thread.run_sync(run)
        except SQLAlchemyError as exc:
            raise TemporarilyUnavailable("The store is unavailable; retry shortly",
                                         detail=type(exc).__name__) from exc
        if isinstance(outcome, OAuthError):
            raise outcome
        return outcome.body

    # -- authorization_code -----------------------------------------------------------------

    def _code(self, session: Session, signer: SigningKey, client: ClientRecord, code: str,
              verifier: str, redirect_uri: str | None, resources: Sequence[str], now: float,
              actor: audit.Actor) -> Issued | OAuthError:
        grant = codes.redeem_code(session, code, now)
        if grant == "unknown":
            return InvalidGrant("The authorization code is invalid or expired")
        if isinstance(grant, codes.Reused):
            if grant.client_id == client.client_id:
                self._revoke_reused(session, grant, now, actor)
            return InvalidGrant("The authorization code was already used; the tokens it "
                                "issued are revoked")
        if grant.client_id != client.client_id:
            return InvalidGrant("The authorization code was issued to another client")
        if redirect_uri is not None and redirect_uri != grant.redirect_uri:
            return InvalidGrant("redirect_uri differs from the authorization request's")
        if not codes.verifier_matches(verifier, grant.code_challenge):
            return InvalidGrant("code_verifier does not match the code_challenge (PKCE)")
        audience = self._audience(resources, grant.resources)
        if isinstance(audience, OAuthError):
            return audience
        user = session.get(User, grant.user_id)
        cutoff = stored_subject_cutoff(session, grant.user_id, client.client_id)
        # A consent revoked (or the person cut off) after the code was issued ends it too.
        if user is None or user.status != "active" or cutoff > grant.created_at:
            return InvalidGrant("The person's authorization is no longer valid")
        body, jti, exp = self._tokens(signer, client, user, grant.scopes, audience, now,
                                      grant.nonce, grant.auth_time, cutoff)
        family = None
        if self._refreshable(client):
            token, family = refresh.issue_refresh_token(
                session, family_id=None, client_id=client.client_id, user_id=user.id,
                scopes=grant.scopes, resources=grant.resources, auth_time=grant.auth_time,
                now=now, expires_at=now + self.flow.refresh_token_lifetime, access_jti=jti,
                access_exp=exp)
            body["refresh_token"] = token
        codes.record_issued(session, grant.id, jti, exp, family)
        return Issued(body)

    def _revoke_reused(self, session: Session, reused: codes.Reused, now: float,
                       actor: audit.Actor) -> None:
        if reused.access_jti and reused.access_exp and reused.access_exp > now:
            deny_token(session, reused.access_jti, reused.client_id, reused.access_exp, now,
                       actor)
            self.denied.add(reused.access_jti, reused.access_exp)
        if reused.refresh_family:
            self._deny_now(refresh.revoke_family(session, reused.refresh_family, now, actor,
                                                 "code reused"))
        audit.record(session, actor, "authorization_code.reused", reused.client_id, now,
                     outcome="denied", details={"user_id": reused.user_id})

    def _deny_now(self, tokens: list[tuple[str, float]]) -> None:
        """This instance at once (the others through the event log). Runs before the commit;
        a failed commit leaves at worst a token denied here that the store does not deny."""
        for jti, exp in tokens:
            self.denied.add(jti, exp)

    # -- refresh_token ----------------------------------------------------------------------

    def _refresh(self, session: Session, signer: SigningKey, client: ClientRecord, token: str,
                 scope: str | None, resources: Sequence[str], now: float,
                 actor: audit.Actor) -> Issued | OAuthError:
        rotate = client.public or self.flow.rotate_confidential
        grant = refresh.use_refresh_token(session, token, client.client_id, now, rotate)
        if grant == "reused":
            family = refresh.family_of(session, token)
            if family is not None:
                self._deny_now(refresh.revoke_family(session, family[0], now, actor,
                                                     "refresh token reused"))
            return InvalidGrant("The refresh token was already used; its family is revoked")
        if grant == "unknown":
            return InvalidGrant("The refresh token is invalid, expired or revoked")
        scopes = grant.scopes
        if scope is not None:
            try:
                asked = parse_scope(scope)
            except ValueError as exc:
                return InvalidScope(str(exc))
            if not set(asked) <= set(grant.scopes):  # RFC 6749 §6: never more than granted
                return InvalidScope("A refresh may not ask for scopes beyond the original grant")
            scopes = asked
        audience = self._audience(resources, grant.resources)
        if isinstance(audience, OAuthError):
            return audience
        user = session.get(User, grant.user_id)
        if user is None or user.status != "active":
            return InvalidGrant("The person's authorization is no longer valid")
        cutoff = stored_subject_cutoff(session, grant.user_id, client.client_id)
        body, jti, exp = self._tokens(signer, client, user, scopes, audience, now, None,
                                      grant.auth_time, cutoff)
        if rotate:
            new, _ = refresh.issue_refresh_token(
                session, family_id=grant.family_id, client_id=client.client_id,
                user_id=user.id, scopes=grant.scopes, resources=grant.resources,
                auth_time=grant.auth_time, now=now, expires_at=grant.expires_at,
                access_jti=jti, access_exp=exp)
            body["refresh_token"] = new
        else:
            refresh.record_access(session, grant.id, jti, exp)
        return Issued(body)

    # -- shared -----------------------------------------------------------------------------

    def _refreshable(self, client: ClientRecord) -> bool:
        return "refresh_token" in client.grant_types and self.flow.refresh_token_lifetime > 0

    def _audience(self, asked: Sequence[str], granted: Sequence[str]) -> Any:
        """RFC 8707 §2.2: the token request may narrow the resources, never widen them."""
        asked = list(dict.fromkeys(asked))
        if asked and not set(asked) <= set(granted):
            return InvalidTarget("resource was not part of the authorization")
        chosen = asked or list(granted)
        if not chosen:
            return self.default_audience
        return chosen[0] if len(chosen) == 1 else chosen

    def _tokens(self, signer: SigningKey, client: ClientRecord, user: User,
                scopes: Sequence[str], audience: Any, now: float, nonce: str | None,
                auth_time: float, cutoff: float) -> tuple[dict[str, Any], str, float]:
        issued = mint_access_token(
            signer, issuer=self.issuer, client_id=client.client_id, subject=user.id,
            org_id=client.org_id, audience=audience, scopes=tuple(scopes),
            lifetime=self.lifetime, now=now,
            not_before=max(client.tokens_valid_after, cutoff))
        body: dict[str, Any] = {"access_token": issued.token, "token_type": "Bearer",
                                "expires_in": issued.expires_in}
        if scopes:
            body["scope"] = " ".join(scopes)
        if "openid" in scopes:
            body["id_token"] = mint_id_token(
                signer, issuer=self.issuer, subject=user.id, client_id=client.client_id,
                auth_time=auth_time, nonce=nonce, claims=person_claims(user, scopes),
                lifetime=self.flow.id_token_lifetime, now=now)
        return body, str(issued.claims["jti"]), float(issued.claims["exp"])
