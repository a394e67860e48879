"""Error classes: RFC 6749 OAuth errors and the platform's API error envelope.

Handlers raise these; `authserver.web.errors` is the one place that renders them. Each error has
a public `description` and a private `detail` that only goes to logs and audit.
"""

from __future__ import annotations

from typing import ClassVar, Literal

OAuthErrorCode = Literal[
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "invalid_target",
    "unsupported_response_type",
    "server_error",
    "temporarily_unavailable",
    "invalid_client_metadata",
    "invalid_redirect_uri",
    "invalid_token",
    "too_many_requests",
    "insufficient_scope",
    "access_denied",
    "login_required",
    "consent_required",
    "interaction_required",
]


class AuthServerError(Exception):
    """Base of every error the server renders on purpose."""


class OAuthError(AuthServerError):
    """An RFC 6749 §5.2 error response."""

    error: ClassVar[OAuthErrorCode] = "invalid_request"
    status_code: ClassVar[int] = 400

    def __init__(self, description: str = "", *, detail: str = "") -> None:
        super().__init__(description)
        self.description = description
        self.detail = detail
        self.retry_after: int | None = None


class InvalidRequest(OAuthError):
    """RFC 6749 §5.2: missing, repeated or malformed parameter."""

    error = "invalid_request"


class InvalidClient(OAuthError):
    """RFC 6749 §5.2: client authentication failed. 401 (with WWW-Authenticate under Basic)."""

    error = "invalid_client"
    status_code = 401

    def __init__(
        self, description: str = "Client authentication failed", *, detail: str = "",
        used_basic: bool = False,
    ) -> None:
        super().__init__(description, detail=detail)
        self.used_basic = used_basic


class InvalidGrant(OAuthError):
    """RFC 6749 §5.2: the grant or refresh token is invalid, expired or revoked."""

    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    """RFC 6749 §5.2: the client is not authorized to use this grant type."""

    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    """RFC 6749 §5.2: the grant type is not supported by this server."""

    error = "unsupported_grant_type"


class InvalidScope(OAuthError):
    """RFC 6749 §5.2: the requested scope is invalid, unknown or exceeds what was granted."""

    error = "invalid_scope"


class InvalidTarget(OAuthError):
    """RFC 8707 §2: the requested resource is invalid or not allowed for this client."""

    error = "invalid_target"


class UnsupportedResponseType(OAuthError):
    """RFC 6749 §4.1.2.1: the server does not support this response type."""

    error = "unsupported_response_type"


class AccessDenied(OAuthError):
    """RFC 6749 §4.1.2.1: the resource owner or authorization server denied the request."""

    error = "access_denied"
    status_code = 403


class LoginRequired(OAuthError):
    """OpenID Connect Core §3.1.2.6: prompt=none, and nobody is signed in."""

    error = "login_required"


class ConsentRequired(OAuthError):
    """OpenID Connect Core §3.1.2.6: prompt=none, and the person has not consented."""

    error = "consent_required"


class TemporarilyUnavailable(OAuthError):
    """RFC 6749 §4.1.2.1: the server cannot handle the request now (storage down, no key)."""

    error = "temporarily_unavailable"
    status_code = 503


class ServerError(OAuthError):
    """RFC 6749 §4.1.2.1: an unexpected condition; details go to the log, never the client."""

    error = "server_error"
    status_code = 500


class InvalidClientMetadata(OAuthError):
    """RFC 7591 §3.2.2: the value of one of the client metadata fields is invalid."""

    error = "invalid_client_metadata"


class InvalidRedirectUri(OAuthError):
    """RFC 7591 §3.2.2: the value of one or more redirection URIs is invalid."""

    error = "invalid_redirect_uri"


class InvalidToken(OAuthError):
    """RFC 6750 §3.1: the bearer token (initial or registration access token) is missing,
    expired, revoked or malformed. 401 with a Bearer challenge."""

    error = "invalid_token"
    status_code = 401

    def __init__(self, description: str = "", *, challenge_error: bool = True) -> None:
        super().__init__(description)
        # RFC 6750 §3.1: a request with no credentials gets a challenge without an error code.
        self.challenge_error = challenge_error


class InsufficientScope(OAuthError):
    """RFC 6750 §3.1: the token (or client) lacks the scope this resource needs. 403."""

    error = "insufficient_scope"
    status_code = 403


class TooManyRequests(OAuthError):
    """Rate limited (RFC 6585 §4): 429 with Retry-After and `retry_after` in the body."""

    error = "too_many_requests"
    status_code = 429

    def __init__(self, description: str, retry_after: int) -> None:
        super().__init__(description)
        self.retry_after = retry_after


class ApiError(AuthServerError):
    """An error of the non-OAuth APIs, rendered in the platform envelope (DESIGN.md)."""

    def __init__(
        self, status: int, type_: str, code: str, message: str,
        details: dict[str, object] | None = None, *, detail: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.code = code
        self.message = message
        self.details = details or {}
        self.detail = detail
        self.headers: dict[str, str] = {}


# RFC 9110 §11.6.1: every 401 names a scheme. API keys have no registered one.
API_KEY_CHALLENGE = 'ApiKey realm="authserver", header="x-api-key"'


def unauthenticated(code: str, message: str, details: dict[str, object] | None = None, *,
                    challenge: str = API_KEY_CHALLENGE, detail: str = "") -> ApiError:
    error = ApiError(401, "authentication_error", code, message, details, detail=detail)
    error.headers["www-authenticate"] = challenge
    return error


def invalid_api_key(message: str = "The provided API key is invalid or expired",
                    reason: str | None = None, *, detail: str = "") -> ApiError:
    return unauthenticated("invalid_api_key", message, {"reason": reason} if reason else None,
                           detail=detail)


def expired_api_key() -> ApiError:
    return unauthenticated("expired_api_key", "The API key has expired")


def insufficient_permissions(needed: str) -> ApiError:
    return ApiError(403, "permission_error", "insufficient_permissions",
                    f"The credential lacks the permission {needed}", {"required": needed})


def rate_limit_exceeded(retry_after: int, scope: str) -> ApiError:
    error = ApiError(429, "rate_limit_error", "rate_limit_exceeded",
                     f"Too many requests; retry in {retry_after} s",
                     {"retry_after": retry_after, "limit": scope})
    error.headers["retry-after"] = str(retry_after)
    return error


def not_found(what: str, code: str = "not_found") -> ApiError:
    return ApiError(404, "not_found_error", code, what)


def invalid_body(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", "invalid_request", message)


# Seconds a 503 asks the caller to wait (the store or a key is back within seconds, usually).
UNAVAILABLE_RETRY_AFTER = 5


def unavailable(message: str) -> ApiError:
    error = ApiError(503, "api_error", "temporarily_unavailable", message)
    error.headers["retry-after"] = str(UNAVAILABLE_RETRY_AFTER)
    return error


class NotFound(AuthServerError):
    """A domain object does not exist (the caller decides how to say so)."""


class Conflict(AuthServerError):
    """A domain change contradicts the current state (e.g. retiring the only signing key)."""


class Invalid(AuthServerError):
    """A domain value is malformed; the message names the field."""
