"""Log output: plain text (the default, for a terminal) or JSON lines (for a log pipeline), each
record with the id of the request it was logged for (docs/observability.md).

The request id travels in a context variable, set by the web layer for the length of a request
(`RequestIdMiddleware`, and `ForwardAuth.__call__` on the fast path). Secrets never reach here
in clear: `web.credentials.install_log_redaction` puts a record factory in front of every
logger; the formatters also pass exception text through `redact` when they are given one.
"""

from __future__ import annotations

import json
import logging
import logging.config
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]
REQUEST_ID: ContextVar[str | None] = ContextVar("authserver_request_id", default=None)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
# uvicorn's access log record args: client address, method, path with query, HTTP version, status.
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


class RequestIdFilter(logging.Filter):
    """Puts `request_id` on every record a handler emits ("-" outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, request_id, and
    exc_info as text; uvicorn's access lines also as fields."""

    def __init__(self, redact: Callable[[str], str] | None = None) -> None:
        super().__init__()
        self.redact = redact or (lambda text: text)

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            # Again here: the record factory redacts only string arguments.
            "message": self.redact(record.getMessage()),
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id and request_id != "-":
            out["request_id"] = request_id
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) \
                and len(record.args) == len(_ACCESS_FIELDS):
            out.update(zip(_ACCESS_FIELDS, record.args, strict=True))
        if record.exc_info:
            out["exc_info"] = self.redact(self.formatException(record.exc_info))
        elif record.exc_text:
            out["exc_info"] = self.redact(record.exc_text)
        if record.stack_info:
            out["stack_info"] = self.redact(self.formatStack(record.stack_info))
        return json.dumps(out, ensure_ascii=False, default=str)


def dict_config(level: str, fmt: LogFormat,
                redact: Callable[[str], str] | None = None) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the process: one stderr handler on the root logger,
    which uvicorn's loggers (and everything else) propagate to. Also what `authserver serve`
    hands uvicorn as `log_config`, so each worker process configures itself the same way."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter, "redact": redact} if fmt == "json"
        else {"format": TEXT_FORMAT})
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"default": formatter},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default",
                                 "filters": ["request_id"], "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True, "level": level},
            "uvicorn.access": {"handlers": [], "propagate": True, "level": level},
            "alembic": {"level": "WARNING"},
        },
    }


def configure(level: str, fmt: LogFormat, redact: Callable[[str], str] | None = None) -> None:
    logging.config.dictConfig(dict_config(level, fmt, redact))
