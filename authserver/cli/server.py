"""serve, migrate, config."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from authserver import logs
from authserver.cli.common import command
from authserver.config import Settings, config_path, load_settings
from authserver.config_example import render_example
from authserver.keyring import Keyring
from authserver.logs import dict_config
from authserver.storage.db import Database
from authserver.web.credentials import redact
from authserver.wiring import create_app, prepare_storage


def worker_app() -> Any:
    """The app of one `serve --workers N` process, built in that process from the settings the
    parent loaded (the same file, via $AUTHSERVER_CONFIG, and the same environment)."""
    settings = load_settings()
    if settings.logging.format == "json":
        logs.configure(settings.logging.level, "json", redact)
    return create_app(settings)


def prepare_workers(config: str | None, settings: Settings) -> None:
    """Once, in the parent, what every worker would otherwise race for: the SQLite migration
    and the first development key."""
    db = Database(settings.effective_database_url, settings.database)
    try:
        prepare_storage(db)
    finally:
        db.dispose()
    if settings.signing.generate_if_missing:
        Keyring(Path(settings.keys_dir), settings.tokens.access_token_lifetime).ensure_signer(
            settings.signing.algorithm, time.time())
    path = config_path(config, os.environ)
    if path is not None:  # workers load exactly this file, whatever their working directory
        os.environ["AUTHSERVER_CONFIG"] = str(path.resolve())


def _worker_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of workers (1-256)")
    return int(text)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    host = args.host or settings.server.host
    port = args.port if args.port is not None else settings.server.port
    workers = args.workers if args.workers is not None else settings.server.workers
    app: Any
    if workers > 1:  # each worker process builds its own app, caches and event follower
        prepare_workers(args.config, settings)
        app = "authserver.cli.server:worker_app"
    else:
        app = create_app(settings)
    # uvicorn drains (server.shutdown_timeout), then re-raises the SIGTERM it caught: a
    # drained stop is a clean exit, status 0, not "killed by SIGTERM".
    signal.signal(signal.SIGTERM, lambda *_: None)
    log_config = LOGGING_CONFIG if settings.logging.format == "text" else \
        dict_config(settings.logging.level, "json", redact)  # uvicorn's loggers too
    uvicorn.run(app, host=host, port=port, log_level=settings.logging.level.lower(),
                log_config=log_config, factory=workers > 1, workers=workers,
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
    serve.add_argument("--workers", type=_worker_count, help="worker processes (default: "
                       "server.workers, 1); each has its own caches and follows the event log")
    command(sub, "migrate", cmd_migrate, "apply pending database migrations")
    config = sub.add_parser("config", help="configuration").add_subparsers(
        dest="sub", required=True)
    command(config, "example", cmd_config_example, "print config.example.toml")
    command(config, "show", cmd_config_show, "print the effective settings")
