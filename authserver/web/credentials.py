"""How API keys arrive: the `x-api-key` header, or (deprecated) the `x-api-key` query parameter,
which is redacted from every log line. An API key sent as `Authorization: Bearer` is refused
with a hint."""

from __future__ import annotations

import logging
import re

from starlette.requests import Request

from authserver import hashing
from authserver.apikeys import looks_like_key
from authserver.errors import invalid_api_key

log = logging.getLogger("authserver.api_keys")
API_KEY_HEADER = "x-api-key"
QUERY_WARNING = ('299 - "Sending the API key in the query string is deprecated; '
                 'use the x-api-key header"')
_IN_QUERY = re.compile(r"(?i)([?&]x-api-key=)[^&\s\"]*")
# Anything shaped like one of our keys, wherever it appears (e.g. pasted into a URL path).
_KEY_SHAPED = re.compile(r"\b([a-z][a-z0-9]{0,15}_(?:live|test)_)[0-9A-Za-z]{16,}")
# Likewise client secrets, registration access tokens and initial access tokens.
_SECRET_SHAPED = re.compile(r"\b(" + "|".join(re.escape(p) for p in (
    hashing.CLIENT_SECRET_PREFIX, hashing.REGISTRATION_TOKEN_PREFIX,
    hashing.INITIAL_ACCESS_TOKEN_PREFIX)) + r")[0-9A-Za-z_-]{16,}")


def redact(text: str) -> str:
    text = _KEY_SHAPED.sub(r"\1[redacted]", _IN_QUERY.sub(r"\1[redacted]", text))
    return _SECRET_SHAPED.sub(r"\1[redacted]", text)


def install_log_redaction() -> None:
    """Remove `x-api-key` query values from every log record of the process, whichever logger
    makes it (uvicorn's access log logs paths with their query string)."""
    current = logging.getLogRecordFactory()
    if getattr(current, "redacts_api_keys", False):
        return

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = current(*args, **kwargs)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return record

    factory.redacts_api_keys = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def note_query_key(key_id: str, address: str | None) -> None:
    """The deprecated way was used: say so in the log, by key id (never the key)."""
    log.warning("API key %s was sent in the query string from %s (deprecated; use the "
                "x-api-key header)", key_id, address or "-")


def presented_api_key(request: Request, prefix: str, allow_query: bool) -> tuple[str, bool]:
    """(the key, whether it came in the query string); 401 `invalid_api_key` without one."""
    header = request.headers.get(API_KEY_HEADER)
    if header is not None:
        return header.strip(), False
    if allow_query:
        query = request.query_params.get(API_KEY_HEADER)
        if query is not None:
            return query.strip(), True
    kind, _, value = request.headers.get("authorization", "").partition(" ")
    if kind.lower() == "bearer" and looks_like_key(value.strip(), prefix):
        raise invalid_api_key("API keys are sent in the x-api-key header, not as "
                              "Authorization: Bearer", "api_key_in_authorization_header")
    raise invalid_api_key("An API key is required in the x-api-key header", "missing")
