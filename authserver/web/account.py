"""A person's own pages: sign-in and sign-out for the authorization flow, the account page
with their consents (and revoking one), and the OpenID Connect userinfo endpoint."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from authserver.errors import InvalidToken, OAuthError
from authserver.oauth.grants import person_claims
from authserver.oauth.token import TokenService
from authserver.people import consents
from authserver.revocation import TokenInspector
from authserver.storage.models import User
from authserver.web.authorize import AuthorizePages, safe_return
from authserver.web.errors import NO_STORE


class AccountPages(AuthorizePages):
    def bind(self, tokens: TokenService, inspector: TokenInspector) -> None:
        self.tokens = tokens
        self.inspector = inspector

    async def login_page(self, request: Request) -> Response:
        return_to = safe_return(request.query_params.get("return_to"))
        return self.render(request, "login.html", return_to=return_to,
                           signed=await self.signin.current(request))

    async def login(self, request: Request) -> Response:
        try:
            form = await self.form(request)
        except OAuthError as exc:
            return self.render(request, "error.html", 400, message=exc.description)
        return_to = safe_return(form.values.get("return_to"))
        username = form.values.get("username", "")
        outcome = await self.signin.attempt(request, username, form.values.get("password", ""))
        if isinstance(outcome, str):
            return self.render(request, "login.html", 401, error=outcome, username=username,
                               return_to=return_to)
        response = RedirectResponse(return_to, 303)
        self.signin.set_cookie(response, outcome[0])
        return response

    async def logout(self, request: Request) -> Response:
        signed = await self.signin.current(request)
        response = RedirectResponse("/login", 303)
        if signed is not None:
            try:
                form = await self.form(request)
            except OAuthError:
                return self.render(request, "error.html", 400, message="Malformed form.")
            if not self.signin.csrf_ok(request, form, signed.csrf_token):
                return self.render(request, "error.html", 403, signed,
                                   message="The form has expired; reload and try again.")
            await self.signin.end(request, response)
        return response

    async def account(self, request: Request) -> Response:
        signed = await self.signin.current(request)
        if signed is None:
            return RedirectResponse("/login?return_to=/account", 303)
        now = self.clock.now()
        views: list[consents.ConsentView] = await self.run(
            lambda s: consents.list_for(s, signed.user.id, now))
        rows = []
        for view in views:
            client = await self.tokens.lookup(view.client_id)
            rows.append({"client_id": view.client_id, "scopes": view.scopes,
                         "granted_at": view.granted_at,
                         "name": client.name if client else "(an application no longer "
                         "registered)"})
        return self.render(request, "account.html", 200, signed, consents=rows)

    async def revoke_consent(self, request: Request) -> Response:
        signed = await self.signin.current(request)
        if signed is None:
            return RedirectResponse("/login?return_to=/account", 303)
        try:
            form = await self.form(request)
        except OAuthError as exc:
            return self.render(request, "error.html", 400, signed, message=exc.description)
        if not self.signin.csrf_ok(request, form, signed.csrf_token):
            return self.render(request, "error.html", 403, signed,
                               message="The form has expired; reload and try again.")
        client_id = form.values.get("client_id", "")
        if not client_id or len(client_id) > 2000:
            return self.render(request, "error.html", 400, signed,
                               message="No application was named.")
        now, actor = self.clock.now(), self.actor(request, signed)
        await self.run(lambda s: consents.revoke(s, signed.user.id, client_id, now, actor),
                       write=True)
        return RedirectResponse("/account", 303)

    async def userinfo(self, request: Request) -> Response:
        """OpenID Connect Core §5.3: the person's claims for an access token with `openid`."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidToken("A bearer access token is required", challenge_error=False)
        claims = await self.inspector.active(token.strip())
        if claims is None or claims.get("sub") == claims.get("client_id"):
            raise InvalidToken("The access token is not active, or not a person's")
        scopes = str(claims.get("scope", "")).split()
        if "openid" not in scopes:
            raise InvalidToken("The access token was not granted the openid scope")
        sub = str(claims["sub"])

        def read(session: Session) -> dict[str, Any] | None:
            user = session.get(User, sub)
            if user is None or user.status != "active":
                return None
            return {"sub": user.id, **person_claims(user, scopes)}
        body = await self.run(read)
        if body is None:
            raise InvalidToken("The access token is not active, or not a person's")
        return Response(orjson.dumps(body), 200, NO_STORE, "application/json")

