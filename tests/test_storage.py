"""Migrations on every store, and the rule that `serve` migrates only the embedded default."""

from __future__ import annotations

import pytest
from sqlalchemy import select

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
