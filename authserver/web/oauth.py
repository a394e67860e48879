"""The token and authorization endpoints."""

from __future__ import annotations

import ipaddress

import orjson
from starlette.requests import Request
from starlette.responses import Response

from authserver.config import Settings
from authserver.errors import OAuthError, UnsupportedResponseType
from authserver.metrics import TOKEN_FAILURE
from authserver.oauth.revocation import RevocationService
from authserver.oauth.token import TokenRequest, TokenService
from authserver.web.errors import NO_STORE
from authserver.web.forms import Form, check_form_type, parse_form, read_body
from authserver.web.middleware import client_address

REPEATABLE = ("resource",)  # RFC 8707 §2: resource may be given more than once


class OAuthEndpoints:
    def __init__(
        self, settings: Settings, tokens: TokenService, revocation: RevocationService
    ) -> None:
        self.tokens = tokens
        self.revocation = revocation
        self.max_body = settings.server.max_body_bytes
        self.trusted = [ipaddress.ip_network(c, strict=False)
                        for c in settings.server.trusted_proxies]

    async def _form(self, request: Request, repeatable: tuple[str, ...] = ()) -> Form:
        check_form_type(request.headers.get("content-type"))
        return parse_form(await read_body(request, self.max_body), repeatable)

    async def token(self, request: Request) -> Response:
        """RFC 6749 §3.2 token endpoint."""
        try:
            form = await self._form(request, REPEATABLE)
            body = await self.tokens.issue(TokenRequest(
                params=form.values,
                resources=form.repeated.get("resource", ()),
                authorization=request.headers.get("authorization"),
                client_ip=client_address(request.scope, self.trusted),
            ))
        except OAuthError as exc:
            TOKEN_FAILURE[exc.error].inc()
            raise
        return Response(orjson.dumps(body), 200, NO_STORE, "application/json")

    async def revoke(self, request: Request) -> Response:
        """RFC 7009 §2: 200 with an empty body once the token is dead (or was never ours)."""
        form = await self._form(request)
        await self.revocation.revoke(form.values, request.headers.get("authorization"),
                                     client_address(request.scope, self.trusted))
        return Response(b"", 200, NO_STORE)

    async def introspect(self, request: Request) -> Response:
        """RFC 7662 §2."""
        form = await self._form(request)
        body = await self.revocation.introspect(
            form.values, request.headers.get("authorization"),
            client_address(request.scope, self.trusted))
        return Response(orjson.dumps(body), 200, NO_STORE, "application/json")

    async def authorize(self, request: Request) -> Response:
        """RFC 6749 §3.1: no response type is supported until the interactive flows land."""
        raise UnsupportedResponseType(
            "This server issues tokens with client_credentials only; the authorization code "
            "flow is not enabled"
        )
