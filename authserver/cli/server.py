"""serve, migrate, config."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

from sqlalchemy.engine import make_url

from authserver.cli.common import command
from authserver.config import Settings
from authserver.config_example import render_example
from authserver.logs import dict_config
from authserver.storage.db import Database
from authserver.web.credentials import redact
from authserver.wiring import create_app


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    host = args.host or settings.server.host
    port = args.port if args.port is not None else settings.server.port
    app = create_app(settings)
    # uvicorn drains (server.shutdown_timeout), then re-raises the SIGTERM it caught: a
    # drained stop is a clean exit, status 0, not "killed by SIGTERM".
    signal.signal(signal.SIGTERM, lambda *_: None)
    log_config = LOGGING_CONFIG if settings.logging.format == "text" else \
        dict_config(settings.logging.level, "json", redact)  # uvicorn's loggers too
    uvicorn.run(app, host=host, port=port, log_level=settings.logging.level.lower(),
                log_config=log_config,
                proxy_headers=False, server_header=False,
                timeout_graceful_shutdown=settings.server.shutdown_timeout)
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    # No statement timeout: building an index on a large table may take longer than a request.
    db = Database(settings.effective_database_url,
                  settings.database.model_copy(update={"statement_timeout": 0}))
    db.migrate()
    print(f"database is up to date ({db.url.render_as_string(hide_password=True)})")
    return 0


def cmd_config_example(args: argparse.Namespace, settings: Settings) -> int:
    sys.stdout.write(render_example())
    return 0


def cmd_config_show(args: argparse.Namespace, settings: Settings) -> int:
    data = settings.model_dump()
    if settings.database_url:
        url = make_url(settings.database_url)
        data["database_url"] = url.render_as_string(hide_password=True)
    print(json.dumps(data, indent=2))
    return 0


def add_commands(sub: Any) -> None:
    serve = command(sub, "serve", cmd_serve, "run the server (migrates the SQLite default)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    command(sub, "migrate", cmd_migrate, "apply pending database migrations")
    config = sub.add_parser("config", help="configuration").add_subparsers(
        dest="sub", required=True)
    command(config, "example", cmd_config_example, "print config.example.toml")
    command(config, "show", cmd_config_show, "print the effective settings")
