"""The `authserver` command: serve, migrate, config, keys, clients, registration, orgs,
api-keys, approvals, usage, audit, users, admin, init."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from authserver import logs
from authserver.cli import (
    apikeys,
    approvals,
    audit,
    clients,
    keys,
    orgs,
    registration,
    server,
    usage,
    users,
)
from authserver.cli.common import CliError, Handler
from authserver.config import ConfigError, load_settings
from authserver.errors import Conflict, Invalid, NotFound
from authserver.keyring import KeyFileError
from authserver.web.credentials import redact


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authserver", description=__doc__)
    parser.add_argument("--config", help="TOML file (default: $AUTHSERVER_CONFIG, then "
                                         "./authserver.toml, then built-in defaults)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (server, keys, clients, registration, orgs, apikeys, approvals, usage, audit,
                   users):
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"authserver: {exc}", file=sys.stderr)
        return 2
    if settings.logging.format == "json":  # docs/observability.md
        logs.configure(settings.logging.level, "json", redact)
    else:
        logging.basicConfig(level=settings.logging.level,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except (CliError, Invalid, NotFound, Conflict, KeyFileError, RuntimeError) as exc:
        print(f"authserver: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
