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
        sa.Column("client_id", sa.String(128), primary_key=True),
        sa.Column("cursor", sa.Integer, nullable=False),
        sa.Column("acked", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("polled_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("set_receivers")
