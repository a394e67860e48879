"""Reading and parsing form bodies strictly (RFC 6749 §3.1, §3.2; RFC 8707 §2)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from starlette.requests import Request

from authserver.errors import InvalidRequest

FORM_TYPE = "application/x-www-form-urlencoded"


class BodyTooLarge(InvalidRequest):
    """The body is larger than `server.max_body_bytes`."""

    status_code = 413


@dataclass(frozen=True, slots=True)
class Form:
    values: dict[str, str] = field(repr=False)
    repeated: dict[str, list[str]] = field(repr=False)


async def read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and not length.isdigit():
        raise InvalidRequest("Content-Length is not a number")
    if length is not None and int(length) > limit:
        raise BodyTooLarge(f"Request body exceeds {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise BodyTooLarge(f"Request body exceeds {limit} bytes")
    return bytes(body)


def check_form_type(content_type: str | None) -> None:
    media, _, params = (content_type or "").partition(";")
    if media.strip().lower() != FORM_TYPE:
        raise InvalidRequest(f"Content-Type must be {FORM_TYPE}")
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8", "utf8", "us-ascii"
        ):
            raise InvalidRequest("Form bodies must be UTF-8")


def parse_form(body: bytes, repeatable: Collection[str] = ()) -> Form:
    """Parse a urlencoded body. Empty values count as absent (RFC 6749 §3.1); a parameter sent
    twice is an error unless it is `repeatable`."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise InvalidRequest("Request body is not valid UTF-8") from exc
    except ValueError as exc:
        raise InvalidRequest("Request body is not a valid form") from exc
    values: dict[str, str] = {}
    repeated: dict[str, list[str]] = {}
    for name, value in pairs:
        if value == "":
            continue
        if name in repeatable:
            repeated.setdefault(name, []).append(value)
        elif name in values:
            raise InvalidRequest(f"Parameter {name} is repeated")
        else:
            values[name] = value
    return Form(values, repeated)
