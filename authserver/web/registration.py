"""The RFC 7591 registration endpoint and the RFC 7592 client configuration endpoint."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import anyio.to_thread
import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from authserver.clients import ClientCache
from authserver.config import Settings
from authserver.errors import (
    InvalidClientMetadata,
    InvalidRequest,
    InvalidToken,
    OAuthError,
    TooManyRequests,
)
from authserver.ratelimit import Limits, RateLimiter, rate_key
from authserver.registration import Origin, Registrar
from authserver.web.errors import NO_STORE
from authserver.web.forms import read_body
from authserver.web.middleware import client_address

REGISTRATION_PATH = "/register"
JSON_TYPES = ("application/json",)


def bearer_token(authorization: str | None) -> str | None:
    """RFC 6750 §2.1: the token of an `Authorization: Bearer` header, None when absent."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer":
        raise InvalidToken("Send the token as Authorization: Bearer <token>")
    if not token or len(token) > 512 or " " in token:
        raise InvalidRequest("Malformed Authorization: Bearer header")  # RFC 6750 §3.1
    return token


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidClientMetadata(f"{key}: given twice")
        out[key] = value
    return out


async def json_object(
    request: Request, limit: int, error: type[OAuthError] = InvalidClientMetadata
) -> dict[str, Any]:
    """The body as a JSON object; anything else is a 400 naming the problem. orjson checks the
    JSON strictly (UTF-8, no lone surrogates, depth); a second pass refuses repeated members,
    which would otherwise collapse silently (last one wins)."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media not in JSON_TYPES:
        raise InvalidRequest("Content-Type must be application/json")
    raw = await read_body(request, limit)
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise error("The request body is not valid JSON (UTF-8)") from exc
    try:
        body = json.loads(raw, object_pairs_hook=_no_duplicates)
    except RecursionError as exc:  # orjson allows deeper nesting than the stdlib parser
        raise error("The request body is nested too deeply") from exc
    except InvalidClientMetadata as exc:
        raise error(exc.description) from exc
    if not isinstance(body, dict):
        raise error("The request body must be a JSON object")
    return body


def _json(body: dict[str, Any], status: int) -> Response:
    return Response(orjson.dumps(body), status, NO_STORE, "application/json")


class RegistrationEndpoints:
    def __init__(self, settings: Settings, registrar: Registrar, cache: ClientCache,
                 limits: Limits) -> None:
        self.registrar = registrar
        # This instance drops its cached copy at once; others follow the event log.
        self.cache = cache
        self.max_body = settings.server.max_body_bytes
        self.trusted = [ipaddress.ip_network(c, strict=False)
                        for c in settings.server.trusted_proxies]
        reg = settings.registration
        self.limiter = RateLimiter(reg.rate_limit, "registration", limits.store) \
            if reg.policy == "open" else None

    async def register(self, request: Request) -> Response:
        """RFC 7591 §3.1 client registration request."""
        address = client_address(request.scope, self.trusted)
        if self.limiter is not None:
            wait = await self.limiter.hit(rate_key(address))
            if wait is not None:
                raise TooManyRequests(
                    "Too many registrations from this address; retry later", wait)
        token = bearer_token(request.headers.get("authorization"))
        body = await json_object(request, self.max_body)
        info = await anyio.to_thread.run_sync(
            self.registrar.register, body, Origin(address, token))
        return _json(info.body, 201)

    async def configuration(self, request: Request) -> Response:
        """RFC 7592 §2: read (GET), update (PUT) or delete (DELETE) one's own registration."""
        client_id = request.path_params["client_id"]
        token = bearer_token(request.headers.get("authorization"))
        if request.method in ("GET", "HEAD"):
            info = await anyio.to_thread.run_sync(self.registrar.read, client_id, token)
            return _json(info.body, 200)
        if request.method == "PUT":
            body = await json_object(request, self.max_body)
            info = await anyio.to_thread.run_sync(
                self.registrar.update, client_id, token, body)
            self.cache.invalidate([client_id])
            return _json(info.body, 200)
        if request.method == "DELETE":
            await anyio.to_thread.run_sync(self.registrar.delete, client_id, token)
            self.cache.invalidate([client_id])
            return Response(None, 204, NO_STORE)
        raise HTTPException(405, headers={"allow": "GET, HEAD, PUT, DELETE"})
