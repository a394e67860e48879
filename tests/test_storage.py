"""Migrations on every store, and the rule that `serve` migrates only the embedded default."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from authserver.storage.db import Database
from authserver.storage.models import DEFAULT_ORG_ID, Organization
from authserver.wiring import prepare_storage


def test_migrations_create_the_default_organisation(database_url: str) -> None:
    db = Database(database_url)
    try:
        assert db.pending_migrations()
        if db.url.get_backend_name() == "sqlite":
            prepare_storage(db)  # serve migrates SQLite itself
        else:
            with pytest.raises(RuntimeError, match="authserver migrate"):
                prepare_storage(db)
            db.migrate()
        assert not db.pending_migrations()
        db.migrate()  # idempotent
        with db.session() as session:
            orgs = session.scalars(select(Organization)).all()
        assert [o.id for o in orgs] == [DEFAULT_ORG_ID]
    finally:
        db.dispose()


def test_a_failed_transaction_leaves_nothing(database_url: str) -> None:
    db = Database(database_url)
    try:
        db.migrate()

        def failing_change() -> None:
            with db.session() as session:
                session.add(Organization(id="org_x", name="x", status="active", created_at=0.0))
                session.flush()
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            failing_change()
        with db.session() as session:
            assert session.get(Organization, "org_x") is None
    finally:
        db.dispose()


def test_migrations_match_the_models(database_url: str) -> None:
    """What `alembic revision --autogenerate` would find: nothing, on either store."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from authserver.storage.models import Base

    db = Database(database_url)
    try:
        db.migrate()
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
    finally:
        db.dispose()


# -- pool, timeouts and retries ([database]) ---------------------------------------------------


class _Sqlstate(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


def _failure(sqlstate: str) -> Exception:
    from sqlalchemy.exc import DBAPIError

    return DBAPIError("UPDATE ...", None, _Sqlstate(sqlstate))


@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])
def test_serialization_failures_and_deadlocks_rerun(database_url: str, sqlstate: str) -> None:
    from authserver.config import DatabaseSettings

    db = Database(database_url, DatabaseSettings(retry_attempts=3))
    try:
        db.migrate()
        runs: list[int] = []

        def change(session: object) -> str:
            runs.append(1)
            if len(runs) < 3:
                raise _failure(sqlstate)
            return "done"

        assert db.run(change, write=True) == "done"
        assert len(runs) == 3
        runs.clear()
        with pytest.raises(Exception, match=f"sqlstate {sqlstate}"):
            db.run(lambda s: change(s) if len(runs) > 5 else (runs.append(1), _raise(sqlstate)),
                   write=True)
        assert len(runs) == 3  # attempts are bounded
        runs.clear()
        with pytest.raises(Exception, match=f"sqlstate {sqlstate}"):
            db.run(lambda s: (runs.append(1), _raise(sqlstate)), retry=False)
        assert len(runs) == 1
    finally:
        db.dispose()


def _raise(sqlstate: str) -> None:
    raise _failure(sqlstate)


def test_other_errors_do_not_rerun(database_url: str) -> None:
    from sqlalchemy.exc import IntegrityError

    from authserver.storage.db import is_unavailable

    db = Database(database_url)
    try:
        db.migrate()
        runs: list[int] = []

        def duplicate(session: Session) -> None:
            runs.append(1)
            session.add(Organization(id=DEFAULT_ORG_ID, name="x", status="active",
                                     created_at=0.0))

        with pytest.raises(IntegrityError) as caught:
            db.run(duplicate, write=True)
        assert len(runs) == 1
        assert not is_unavailable(caught.value)  # a bug, not an outage: never a 503
    finally:
        db.dispose()


def test_pool_and_statement_timeout_settings_apply() -> None:
    """PostgreSQL settings, on PostgreSQL only (not parametrized over the stores: a SQLite
    variant would have nothing to check)."""
    import os

    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from authserver.config import DatabaseSettings
    from authserver.storage.db import is_unavailable
    from tests.conftest import POSTGRES_ENV, fresh_postgres_database

    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} is not set (e.g. postgresql://postgres@127.0.0.1/test)")
    settings = DatabaseSettings(pool_size=3, max_overflow=2, pool_timeout=1.5,
                                statement_timeout=200)
    with fresh_postgres_database(base) as database_url:
        db = Database(database_url, settings)
        try:
            pool: object = db.engine.pool
            assert pool.size() == 3  # type: ignore[attr-defined]
            assert pool._max_overflow == 2  # type: ignore[attr-defined]
            assert pool._timeout == 1.5  # type: ignore[attr-defined]
            with db.session() as session:
                assert session.execute(text("SHOW statement_timeout")).scalar() == "200ms"
            with pytest.raises(OperationalError) as caught, db.session() as session:
                session.execute(text("SELECT pg_sleep(2)"))
            assert is_unavailable(caught.value)  # a statement cut off by the timeout: a 503
            with db.session() as session:  # the connection is still good
                assert session.execute(text("SELECT 1")).scalar() == 1
        finally:
            db.dispose()


def test_a_database_that_is_down_is_unavailable() -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    from authserver.config import DatabaseSettings
    from authserver.storage.db import is_unavailable

    db = Database("postgresql://postgres@127.0.0.1:1/nothing", DatabaseSettings(connect_timeout=2))
    try:
        with pytest.raises(SQLAlchemyError) as caught, db.session() as session:
            session.execute(text("SELECT 1"))
        assert is_unavailable(caught.value)
    finally:
        db.dispose()
