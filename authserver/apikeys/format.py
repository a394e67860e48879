"""The shape of an API key: `<prefix>_<live|test>_<lookup><secret><check>`.

`lookup` (12 base62 characters, ~71 bits) is the key's public id; `secret` (43 base62
characters) carries 256 bits of randomness; `check` (6 base62 characters) is a CRC-32 of
everything before it, so a mistyped or made-up key is refused without a database read.
"""

from __future__ import annotations

import re
import secrets
import zlib
from typing import Literal, NamedTuple

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
LOOKUP_LEN, SECRET_LEN, CHECK_LEN = 12, 43, 6
KEY_ID_PREFIX = "key_"
Environment = Literal["live", "test"]
ENVIRONMENTS: tuple[Environment, ...] = ("live", "test")
_BODY_LEN = LOOKUP_LEN + SECRET_LEN + CHECK_LEN
_SHAPE = re.compile(rf"^([a-z][a-z0-9]{{0,15}})_(live|test)_([0-9A-Za-z]{{{_BODY_LEN}}})$")


def _base62(number: int, length: int) -> str:
    chars = []
    for _ in range(length):
        number, digit = divmod(number, 62)
        chars.append(ALPHABET[digit])
    return "".join(reversed(chars))


def _check(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), CHECK_LEN)


class ParsedKey(NamedTuple):
    """A key's id and environment (a named tuple: one is built for every request with a key,
    and a frozen dataclass took half a microsecond)."""

    key_id: str
    environment: Environment


def new_key(prefix: str, environment: Environment) -> tuple[str, str]:
    """A fresh key and its id: (key_id, key)."""
    lookup = _base62(secrets.randbits(71), LOOKUP_LEN)
    secret = _base62(secrets.randbits(256), SECRET_LEN)
    body = f"{prefix}_{environment}_{lookup}{secret}"
    return KEY_ID_PREFIX + lookup, body + _check(body)


def parse_key(presented: str, prefix: str) -> ParsedKey | None:
    """The key's id and environment when it has our shape and checksum, else None."""
    parsed = key_shape(presented, prefix)
    if parsed is None or not checksum_matches(presented):
        return None
    return parsed


def key_shape(presented: str, prefix: str) -> ParsedKey | None:
    """`parse_key` without the checksum: the id and environment when the key has our shape."""
    match = _SHAPE.match(presented)
    if match is None or match.group(1) != prefix:
        return None
    environment: Environment = "live" if match.group(2) == "live" else "test"
    return ParsedKey(KEY_ID_PREFIX + match.group(3)[:LOOKUP_LEN], environment)


def checksum_matches(presented: str) -> bool:
    """Whether the last CHECK_LEN characters of a key of our shape are its checksum."""
    body, check = presented[:-CHECK_LEN], presented[-CHECK_LEN:]
    return secrets.compare_digest(_check(body), check)


def looks_like_key(value: str, prefix: str) -> bool:
    """Whether a credential sent elsewhere (e.g. as a bearer token) is one of our API keys."""
    return value.startswith((f"{prefix}_live_", f"{prefix}_test_"))
