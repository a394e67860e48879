"""What every command module shares: output, times and durations, the database, the audit
actor, the error type."""

from __future__ import annotations

import argparse
import getpass
import json
import math
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from authserver import audit
from authserver.config import Settings
from authserver.storage.db import Database
from authserver.wiring import prepare_storage

Handler = Callable[[argparse.Namespace, Settings], int]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class CliError(Exception):
    """Reported on stderr with exit status 2."""


def out(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else text)


def show_time(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cli_actor() -> audit.Actor:
    """The audit log's actor for this command: `cli:<login name>` (plain `cli` when the
    process has no login name, e.g. a container user without a passwd entry)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        return audit.CLI
    return audit.Actor(f"cli:{user}"[:200])


def parse_seconds(text: str, option: str, *, zero_ok: bool = False) -> float:
    """`90`, `90s`, `15m`, `24h`, `7d`, `2w` → seconds; CliError naming `option` otherwise."""
    match = _DURATION.match(text)
    if not match or (float(match.group(1)) == 0 and not zero_ok):
        raise CliError(f"{option}: {text!r} is not a duration such as 3600, 15m, 24h or 7d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_time(text: str, option: str) -> float:
    """Seconds since the epoch, or an ISO 8601 time (UTC when it names no offset)."""
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise CliError(f"{option}: {text!r} is not a time")
        return value
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise CliError(f"{option}: {text!r} is neither an ISO 8601 time "
                       "(2030-01-31T12:00:00Z) nor seconds since the epoch") from exc
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def database(settings: Settings) -> Database:
    db = Database(settings.effective_database_url, settings.database)
    prepare_storage(db)
    return db


def command(group: Any, name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
    """Add a subcommand that runs `handler`."""
    p: argparse.ArgumentParser = group.add_parser(name, help=help_, description=help_)
    p.set_defaults(handler=handler)
    return p


def rate_limit_pairs(values: Sequence[str] | None) -> tuple[tuple[str, str], ...] | None:
    """`--rate-limit hourly=1000/hour` (repeatable) → (("hourly", "1000/hour"),)."""
    if values is None:
        return None
    pairs = []
    for value in values:
        kind, sep, rate = value.partition("=")
        if not sep or not kind.strip() or not rate.strip():
            raise CliError(f"--rate-limit: {value[:60]!r} is not KIND=RATE, e.g. "
                           "hourly=1000/hour or burst=60/minute")
        pairs.append((kind.strip(), rate.strip()))
    return tuple(pairs)
