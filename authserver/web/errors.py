"""The one place errors become HTTP responses."""

from __future__ import annotations

import logging
import re

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from authserver.errors import (
    UNAVAILABLE_RETRY_AFTER,
    ApiError,
    InvalidClient,
    InvalidToken,
    OAuthError,
    TemporarilyUnavailable,
    unavailable,
)
from authserver.storage.db import is_unavailable

log = logging.getLogger("authserver.errors")
# RFC 6749 §5.2: error_description is %x20-21 / %x23-5B / %x5D-7E.
_DESCRIPTION_UNSAFE = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")

# Paths answered in the platform envelope (DESIGN.md); the rest speak RFC 6749.
PLATFORM_PATHS = ("/api/", "/forward-auth")
NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}
_API_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
              404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
              429: "rate_limit_error"}


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def oauth_error_response(exc: OAuthError) -> Response:
    """RFC 6749 §5.2 body; no-store; 401 always carries a challenge (RFC 9110 §15.5.2)."""
    body: dict[str, str | int] = {"error": exc.error}
    if exc.description:
        body["error_description"] = _DESCRIPTION_UNSAFE.sub("?", exc.description)
    headers = dict(NO_STORE)
    if isinstance(exc, InvalidClient):
        headers["www-authenticate"] = 'Basic realm="authserver", charset="UTF-8"'
    elif isinstance(exc, InvalidToken):
        headers["www-authenticate"] = 'Bearer realm="authserver"' + (
            ', error="invalid_token"' if exc.challenge_error else "")
    if exc.retry_after is not None:
        headers["retry-after"] = str(exc.retry_after)
        body["retry_after"] = exc.retry_after
    elif exc.status_code == 503:
        headers["retry-after"] = str(UNAVAILABLE_RETRY_AFTER)
    return Response(orjson.dumps(body), exc.status_code, headers, "application/json")


def api_error_response(exc: ApiError, rid: str) -> Response:
    error = {"type": exc.type, "code": exc.code, "message": exc.message, "status": exc.status,
             "request_id": rid}
    if exc.details:
        error["details"] = exc.details
    return Response(orjson.dumps({"error": error}), exc.status, {**NO_STORE, **exc.headers},
                    "application/json")


async def handle_oauth_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OAuthError)
    if exc.detail or exc.status_code >= 500:
        log.info("oauth error %s on %s: %s", exc.error, request.url.path, exc.detail,
                 extra={"request_id": request_id(request)})
    return oauth_error_response(exc)


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return api_error_response(exc, request_id(request))


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    message = {404: "No such endpoint", 405: "Method not allowed on this endpoint"}.get(
        status, str(exc.detail))
    response = api_error_response(
        ApiError(status, _API_TYPES.get(status, "api_error"), code, message), request_id(request)
    )
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def handle_store_error(request: Request, exc: Exception) -> Response:
    """A store error no handler caught. The store being down, unreachable, out of pooled
    connections, or a statement timing out is 503 `temporarily_unavailable` in the path's
    format (RFC 6749 JSON, the platform envelope, or text for the admin UI), with Retry-After;
    anything else from the store is unexpected (500)."""
    if not is_unavailable(exc):
        return await handle_unexpected(request, exc)
    rid = request_id(request)
    cause = str(getattr(exc, "orig", None) or type(exc).__name__).splitlines()[0]
    log.warning("store unavailable on %s %s (request %s): %s", request.method,
                request.url.path, rid, cause, extra={"request_id": rid})
    message = "The store is unavailable; nothing was changed; retry shortly"
    path = request.url.path
    if path.startswith(PLATFORM_PATHS):
        return api_error_response(unavailable(message), rid)
    if path.startswith("/admin"):
        return Response(message + ".\n", 503, {**NO_STORE, "retry-after":
                                                str(UNAVAILABLE_RETRY_AFTER)}, "text/plain")
    return oauth_error_response(TemporarilyUnavailable(message))


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """Anything unplanned: a generic server_error with the request id, the traceback to the log."""
    if is_unavailable(exc):  # also from paths that call this directly (forward-auth)
        return await handle_store_error(request, exc)
    rid = request_id(request)
    log.error("unhandled error on %s %s (request %s)", request.method, request.url.path, rid,
              exc_info=(type(exc), exc, exc.__traceback__))
    message = f"Unexpected error; quote request id {rid}"
    if request.url.path.startswith(PLATFORM_PATHS):  # the platform APIs: the envelope
        return api_error_response(ApiError(500, "api_error", "server_error", message), rid)
    body = {"error": "server_error", "error_description": message}
    return Response(orjson.dumps(body), 500, NO_STORE, "application/json")
