"""Storage: SQLAlchemy 2.x models, engine and Alembic migrations."""
