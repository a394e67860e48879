"""The RFC 7009 deny-list.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(128), primary_key=True),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("exp", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float, nullable=False),
    )
    op.create_index("ix_revoked_tokens_exp", "revoked_tokens", ["exp"])


def downgrade() -> None:
    op.drop_table("revoked_tokens")
