"""Quorum approval of gated admin actions.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approval_requests",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("required_approvals", sa.Integer, nullable=False),
        sa.Column("approvals", sa.JSON, nullable=False),
        sa.Column("rejection", sa.JSON, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("decided_at", sa.Float, nullable=True),
        sa.Column("executed_at", sa.Float, nullable=True),
        sa.Column("result", sa.String(200), nullable=True),
    )
    op.create_index("ix_approval_requests_created_at", "approval_requests",
                    ["created_at", "id"])
    op.create_index("ix_approval_requests_org_id", "approval_requests", ["org_id"])
    op.create_index("ix_approval_requests_state", "approval_requests", ["state"])


def downgrade() -> None:
    op.drop_table("approval_requests")
