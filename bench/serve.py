"""Benchmark launcher: the real app from `authserver.wiring.create_app`, served by uvicorn with
the access log off, uvloop and httptools (what `authserver serve` would pick too, minus the
access log). Used by bench/run.sh; not part of the package.

    python bench/serve.py --config CONFIG.toml --port PORT
    python bench/serve.py --static FILE --port PORT    # reference: bare Starlette, no authserver
    python bench/serve.py --config CONFIG.toml --port PORT --workers 2   # bench/run.sh WORKERS

`--static` serves FILE's bytes at /.well-known/jwks.json from a one-route Starlette app (no
middleware, no database): the ceiling of this machine for the same uvicorn settings.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from authserver.cli.server import prepare_workers
from authserver.config import load_settings
from authserver.wiring import create_app


def static_app(path: str) -> Starlette:
    body = Path(path).read_bytes()

    async def static(request: Request) -> Response:
        return Response(body, 200, media_type="application/json")

    return Starlette(routes=[Route("/.well-known/jwks.json", static, methods=["GET"])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config")
    source.add_argument("--static")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1,
                        help="uvicorn worker processes, each building its own app")
    args = parser.parse_args()
    app: Any
    level = "WARNING"
    options: dict[str, Any] = {}
    if args.static:
        app = static_app(args.static)
    else:
        settings = load_settings(args.config)
        level = settings.logging.level
        if args.workers > 1:  # as `authserver serve --workers N` does
            prepare_workers(args.config, settings)
            app = "authserver.cli.server:worker_app"
            options = {"factory": True, "workers": args.workers}
        else:
            app = create_app(settings)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, log_level=level.lower(),
        access_log=False, loop="uvloop", http="httptools", proxy_headers=False,
        server_header=False, **options,
    )


if __name__ == "__main__":
    main()
