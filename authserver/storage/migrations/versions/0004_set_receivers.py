"""RFC 8936 poll delivery state per receiver.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "set_receivers",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("cursor", sa.Integer, nullable=False),
        sa.Column("sent_through", sa.Integer, nullable=False),
        sa.Column("acked", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("polled_at", sa.Float, nullable=False),
    )
    op.create_index("ix_set_receivers_client_id", "set_receivers", ["client_id"])


def downgrade() -> None:
    op.drop_table("set_receivers")
