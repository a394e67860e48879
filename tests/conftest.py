"""Shared fixtures: settings on a temporary store, the app in-process, a live uvicorn server,
and a DEBUG-level capture of every log record that must never contain an issued secret."""

from __future__ import annotations

import io
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from sqlalchemy.engine import make_url

from authserver.clock import FakeClock, SystemClock
from authserver.config import Settings, load_settings
from authserver.wiring import Runtime, build_runtime, create_app
from tests import factories

POSTGRES_ENV = "AUTHSERVER_TEST_POSTGRES_URL"
# "postgres": every test's store is a fresh PostgreSQL database (on the server at
# $AUTHSERVER_TEST_POSTGRES_URL) instead of a SQLite file; `.ci/run` runs the suite both ways.
DATABASE_ENV = "AUTHSERVER_TEST_DATABASE"
ON_POSTGRES = os.environ.get(DATABASE_ENV, "sqlite") == "postgres"
sqlite_only = pytest.mark.skipif(ON_POSTGRES, reason="SQLite-specific; runs in the SQLite pass")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- the log capture that secrets must never reach ---------------------------------------------

_LOG = io.StringIO()


@pytest.fixture(scope="session", autouse=True)
def debug_log_capture() -> Iterator[io.StringIO]:
    """Every log record of the whole run, at DEBUG; checked for issued secrets at the end."""
    handler = logging.StreamHandler(_LOG)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield _LOG
    root.removeHandler(handler)
    root.setLevel(previous)
    leaked = factories.leaked_secrets(_LOG.getvalue())
    assert not leaked, f"{len(leaked)} issued secret(s) or token(s) appeared in the logs"


# -- databases ---------------------------------------------------------------------------------


class PostgresPerTest:
    """The PostgreSQL pass: one database per test directory, copied from a template migrated
    once per session (CREATE DATABASE ... TEMPLATE: ~0.1 s, no migration run per test), dropped
    when the test ends; the template goes at the end of the session."""

    def __init__(self, base: str) -> None:
        self.base = make_url(base)
        self.prefix = "authserver_test_" + secrets.token_hex(4)
        self.template = self.prefix + "_tmpl"
        self.ready = False
        self.by_dir: dict[Path, str] = {}
        self.made = 0

    def _admin(self) -> psycopg.Connection[Any]:
        url = self.base.set(drivername="postgresql")
        return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)

    def url(self, name: str) -> str:
        return self.base.set(database=name).render_as_string(hide_password=False)

    def database_for(self, directory: Path) -> str:
        """The database of a test directory (as SQLite's file is <tmp_path>/authserver.db)."""
        if directory not in self.by_dir:
            from authserver.storage.db import Database

            with self._admin() as conn:
                if not self.ready:
                    conn.execute(f'CREATE DATABASE "{self.template}"')
                    db = Database(self.url(self.template))
                    db.migrate()
                    db.dispose()
                    self.ready = True
                self.made += 1
                name = f"{self.prefix}_{self.made}"
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
            self.by_dir[directory] = name
        return self.url(self.by_dir[directory])

    def drop_all(self, template: bool = False) -> None:
        names = list(self.by_dir.values()) + ([self.template] if template and self.ready else [])
        if not names:
            return
        with self._admin() as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.by_dir.clear()


_PER_TEST: PostgresPerTest | None = None
if ON_POSTGRES:
    if not os.environ.get(POSTGRES_ENV):
        raise RuntimeError(f"{DATABASE_ENV}=postgres needs {POSTGRES_ENV}")
    _PER_TEST = PostgresPerTest(os.environ[POSTGRES_ENV])


@pytest.fixture(autouse=True)
def _drop_test_databases() -> Iterator[None]:
    yield
    if _PER_TEST is not None:
        _PER_TEST.drop_all()


@pytest.fixture(scope="session", autouse=True)
def _drop_template() -> Iterator[None]:
    yield
    if _PER_TEST is not None:
        _PER_TEST.drop_all(template=True)


def default_database_url(tmp_path: Path) -> str:
    """The store a test gets when it names none: SQLite in its directory, or (the PostgreSQL
    pass) a migrated PostgreSQL database of its own."""
    if _PER_TEST is not None:
        return _PER_TEST.database_for(tmp_path)
    return f"sqlite:///{tmp_path / 'authserver.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: SQLite always, PostgreSQL when its URL is set."""
    if ON_POSTGRES:  # the same test on the same stores as in the SQLite pass
        pytest.skip("runs on both stores in the SQLite pass already")
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'authserver.db'}"
        return
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} is not set (e.g. postgresql://postgres@127.0.0.1/test)")
    with fresh_postgres_database(base) as url:
        yield url


class fresh_postgres_database:
    def __init__(self, base: str) -> None:
        self.base = make_url(base)
        self.name = "authserver_test_" + secrets.token_hex(6)

    def _admin(self) -> psycopg.Connection[Any]:
        url = self.base.set(drivername="postgresql")
        return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)

    def __enter__(self) -> str:
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        return self.base.set(database=self.name).render_as_string(hide_password=False)

    def __exit__(self, *exc: object) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


# -- settings, runtime, app --------------------------------------------------------------------


def make_settings(tmp_path: Path, database_url: str | None = None, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "issuer": "http://127.0.0.1:8000",
        "database_url": database_url or default_database_url(tmp_path),
        "keys_dir": str(tmp_path / "keys"),
        "data_dir": str(tmp_path / "data"),
        # Load tests hammer one client from one address; rate-limit tests set their own.
        "rate_limits": {"client_hourly": "10000000/hour", "client_burst": "1000000/minute",
                        "organization_hourly": "10000000/hour", "address": "1000000/minute"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key].update(value)
        else:
            base[key] = value
    return load_settings(env={}, overrides=base)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@dataclass
class AppHarness:
    runtime: Runtime
    http: httpx.AsyncClient

    @property
    def settings(self) -> Settings:
        return self.runtime.settings


@pytest.fixture
async def harness(settings: Settings, clock: FakeClock) -> AsyncIterator[AppHarness]:
    """The app in-process, lifespan run, with a fake clock."""
    async with running_app(settings, clock) as h:
        yield h


class running_app:
    def __init__(self, settings: Settings, clock: Any = None) -> None:
        self.runtime = build_runtime(settings, clock or SystemClock())
        self.app = create_app(settings, runtime=self.runtime)

    async def __aenter__(self) -> AppHarness:
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()
        transport = httpx.ASGITransport(app=self.app, client=("127.0.0.1", 50000))
        self.http = httpx.AsyncClient(transport=transport, base_url=self.runtime.settings.issuer)
        return AppHarness(self.runtime, self.http)

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()
        await self._lifespan.__aexit__(None, None, None)


# -- a real server on a loopback socket --------------------------------------------------------


@dataclass
class LiveServer:
    url: str
    runtime: Runtime
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve_config(tmp_path: Path, extra: str) -> tuple[Path, str]:
    """A config file for `authserver serve` as a subprocess on a free loopback port: the
    file and the issuer URL. `extra` is TOML appended after `[server] port`, e.g.
    "shutdown_timeout = 5\n[cache]\nevent_poll_interval = 0.5\n"."""
    sock, url = bind_loopback()
    port = sock.getsockname()[1]
    sock.close()
    config = tmp_path / "authserver.toml"
    config.write_text(
        f'issuer = "{url}"\ndata_dir = "{tmp_path / "data"}"\nkeys_dir = "{tmp_path / "keys"}"\n'
        f'database_url = "{default_database_url(tmp_path)}"\n[server]\nport = {port}\n' + extra)
    return config, url


def bind_loopback() -> tuple[socket.socket, str]:
    """A socket on 127.0.0.1 with an ephemeral port, and its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


def serve_in_thread(app: Any, sock: socket.socket) -> tuple[uvicorn.Server, threading.Thread]:
    """Run `app` under uvicorn on `sock` in a daemon thread; returns once it is serving."""
    # log_config=None: uvicorn's loggers propagate to the root, so the leak check sees them
    # proxy_headers=False as `authserver serve` does: the app's trusted_proxies decide alone
    config = uvicorn.Config(app, log_config=None, log_level="debug", lifespan="on",
                            proxy_headers=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    return server, thread


def start_live_server(tmp_path: Path, **overrides: Any) -> LiveServer:
    """authserver under uvicorn on 127.0.0.1, ephemeral port; the issuer is that exact URL."""
    sock, url = bind_loopback()
    settings = make_settings(tmp_path, issuer=url, **overrides)
    runtime = build_runtime(settings)
    server, thread = serve_in_thread(create_app(settings, runtime=runtime), sock)
    return LiveServer(url, runtime, server, thread)


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    server = start_live_server(tmp_path)
    yield server
    server.stop()
