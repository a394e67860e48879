"""Dynamic client registration: registrations, initial access tokens, client origin and use.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.add_column(sa.Column("origin", sa.String(16), nullable=False,
                                   server_default="admin"))
        batch.add_column(sa.Column("last_used_at", sa.Float, nullable=True))
    op.create_index("ix_clients_origin", "clients", ["origin"])
    op.create_table(
        "client_registrations",
        sa.Column("client_id", sa.String(128),
                  sa.ForeignKey("clients.client_id", ondelete="CASCADE"), primary_key=True),
        sa.Column("via", sa.String(32), nullable=False),
        sa.Column("initial_access_token_id", sa.String(32), nullable=True),
        sa.Column("source_address", sa.String(64), nullable=True),
        sa.Column("software_id", sa.String(200), nullable=True),
        sa.Column("software_version", sa.String(200), nullable=True),
        sa.Column("client_metadata", sa.JSON, nullable=False),
        sa.Column("scope_ceiling", sa.JSON, nullable=False),
        sa.Column("token_digest", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(64), nullable=True, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "initial_access_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("description", sa.String(200), nullable=False),
        sa.Column("scopes", sa.JSON, nullable=False),
        sa.Column("max_uses", sa.Integer, nullable=True),
        sa.Column("uses", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=True),
        sa.Column("revoked_at", sa.Float, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("initial_access_tokens")
    op.drop_table("client_registrations")
    op.drop_index("ix_clients_origin", "clients")
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("last_used_at")
        batch.drop_column("origin")
