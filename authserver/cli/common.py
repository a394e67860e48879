"""What every command module shares: output, times, the database, the error type."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from authserver.config import Settings
from authserver.storage.db import Database
from authserver.wiring import prepare_storage

Handler = Callable[[argparse.Namespace, Settings], int]


class CliError(Exception):
    """Reported on stderr with exit status 2."""


def out(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else text)


def show_time(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def database(settings: Settings) -> Database:
    db = Database(settings.effective_database_url)
    prepare_storage(db)
    return db


def command(group: Any, name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
    """Add a subcommand that runs `handler`."""
    p: argparse.ArgumentParser = group.add_parser(name, help=help_, description=help_)
    p.set_defaults(handler=handler)
    return p
