"""Engine, sessions and migrations; the pool, timeouts and retries of the store."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from authserver.config import DatabaseSettings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
log = logging.getLogger("authserver.storage")
T = TypeVar("T")
# SQLSTATEs after which PostgreSQL has rolled the whole transaction back and running it again
# may succeed: serialization_failure, deadlock_detected.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


def is_retryable(exc: BaseException) -> bool:
    """A serialization failure or deadlock: nothing was committed, the transaction may rerun."""
    orig = getattr(exc, "orig", None)
    return isinstance(exc, DBAPIError) and getattr(orig, "sqlstate", None) in RETRYABLE_SQLSTATES


def is_unavailable(exc: BaseException) -> bool:
    """The store cannot answer now (down, unreachable, pool exhausted, statement timed out,
    SQLite locked): a 503 `temporarily_unavailable`, not a bug. Constraint violations, bad SQL
    and bad data are not in this class."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and (exc.connection_invalidated or is_retryable(exc))


class Database:
    """An engine and its session factory."""

    def __init__(self, url: str, settings: DatabaseSettings | None = None) -> None:
        settings = settings or DatabaseSettings()
        self.settings = settings
        parsed = make_url(url)
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.url = parsed
        options: dict[str, Any] = {}
        if parsed.get_backend_name() == "postgresql":
            # pre_ping: a connection the server dropped (restart, failover) is replaced on
            # checkout, so the service recovers by itself when the database is back.
            options = {"pool_size": settings.pool_size, "max_overflow": settings.max_overflow,
                       "pool_timeout": settings.pool_timeout,
                       "pool_recycle": settings.pool_recycle or -1,
                       "connect_args": _pg_connect_args(settings)}
        self.engine: Engine = create_engine(parsed, pool_pre_ping=True, **options)
        if parsed.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error.

        `write=True` for a transaction that reads, then writes: on SQLite it takes the write
        lock up front (BEGIN IMMEDIATE), so two such transactions queue on busy_timeout instead
        of one failing with SQLITE_BUSY when it upgrades a stale read snapshot.
        """
        with self._sessions.begin() as session:
            if write:
                session.connection(execution_options={_IMMEDIATE: True})
            yield session

    def run(self, fn: Callable[[Session], T], *, write: bool = False, retry: bool = True) -> T:
        """`fn` in one transaction (see `session`); a serialization failure or deadlock
        (SQLSTATE 40001/40P01: PostgreSQL rolled everything back) reruns it up to
        `database.retry_attempts` times with a short backoff. Only for an `fn` whose whole
        effect is in the session (no outside side effects), which is what makes a rerun safe;
        `retry=False` runs it once."""
        attempts = self.settings.retry_attempts if retry else 1
        for attempt in range(1, attempts + 1):
            try:
                with self.session(write=write) as session:
                    return fn(session)
            except SQLAlchemyError as exc:
                if attempt == attempts or not is_retryable(exc):
                    raise
                log.info("transaction rerun after %s (attempt %d of %d)",
                         getattr(exc.orig, "sqlstate", "?"), attempt, attempts)  # type: ignore[attr-defined]
                time.sleep(0.01 * 2 ** attempt)
        raise AssertionError("unreachable")  # the loop returns or raises

    def dispose(self) -> None:
        self.engine.dispose()

    def _alembic(self) -> AlembicConfig:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["engine"] = self.engine
        return cfg

    def migrate(self) -> None:
        """Apply every pending migration."""
        command.upgrade(self._alembic(), "head")

    def pending_migrations(self) -> bool:
        script = ScriptDirectory.from_config(self._alembic())
        with self.engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_heads()
        return set(current) != set(script.get_heads())


def insert_if_absent(session: Session, table: Table, values: dict[str, Any], key: str) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING (PostgreSQL and SQLite); True when this call inserted
    the row, so concurrent writers of the same row settle without an IntegrityError.
    RETURNING tells, not rowcount: psycopg reports -1 for this statement."""
    insert: Any = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(table).values(values).on_conflict_do_nothing().returning(table.c[key])
    return session.connection().execute(statement).first() is not None


def upsert_adding(
    session: Session, table: Table, rows: list[dict[str, Any]], keys: tuple[str, ...],
    counters: tuple[str, ...],
) -> None:
    """INSERT each row, or add its `counters` to the existing row with the same `keys`
    (ON CONFLICT DO UPDATE; atomic under concurrent writers on PostgreSQL and SQLite)."""
    if not rows:
        return
    insert: Any = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=[table.c[k] for k in keys],
        set_={c: table.c[c] + statement.excluded[c] for c in counters},
    )
    session.connection().execute(statement, rows)


_IMMEDIATE = "authserver_begin_immediate"


def _pg_connect_args(settings: DatabaseSettings) -> dict[str, Any]:
    """libpq parameters: connect timeout, and the statement timeout set at connect time for
    every session (`options=-c statement_timeout=...`; no extra round trip per checkout)."""
    args: dict[str, Any] = {"connect_timeout": settings.connect_timeout}
    if settings.statement_timeout:
        args["options"] = f"-c statement_timeout={settings.statement_timeout}"
    return args


def _sqlite_connect(dbapi_connection: object, _record: object) -> None:
    # SQLAlchemy emits BEGIN itself (see _sqlite_begin), not the sqlite3 module.
    dbapi_connection.isolation_level = None  # type: ignore[attr-defined]
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get(_IMMEDIATE)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
