"""People's flows: redirect URIs, consents, authorization codes, refresh tokens, user cutoffs.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.add_column(sa.Column("redirect_uris", sa.JSON, nullable=False,
                                   server_default=sa.text("'[]'")))
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("email_verified", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("tokens_valid_after", sa.Float, nullable=False,
                                   server_default=sa.text("0")))
    # Self-registered clients kept their redirect URIs in the registration's metadata.
    registrations = sa.table("client_registrations", sa.column("client_id", sa.String),
                             sa.column("client_metadata", sa.JSON))
    clients = sa.table("clients", sa.column("client_id", sa.String),
                       sa.column("redirect_uris", sa.JSON))
    conn = op.get_bind()
    for client_id, metadata in conn.execute(sa.select(registrations.c.client_id,
                                                      registrations.c.client_metadata)):
        uris = (metadata or {}).get("redirect_uris") or []
        if uris:
            conn.execute(sa.update(clients).where(clients.c.client_id == client_id)
                         .values(redirect_uris=list(uris)))
    op.create_table(
        "consents",
        sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("client_id", sa.String(2000), primary_key=True),
        sa.Column("scopes", sa.JSON, nullable=False),
        sa.Column("granted_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=True),
        sa.Column("revoked_at", sa.Float, nullable=True),
        sa.Column("tokens_valid_after", sa.Float, nullable=False),
    )
    op.create_table(
        "authorization_codes",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("client_id", sa.String(2000), nullable=False),
        sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("redirect_uri", sa.String(2000), nullable=False),
        sa.Column("code_challenge", sa.String(128), nullable=False),
        sa.Column("scopes", sa.JSON, nullable=False),
        sa.Column("resources", sa.JSON, nullable=False),
        sa.Column("nonce", sa.String(512), nullable=True),
        sa.Column("auth_time", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("used_at", sa.Float, nullable=True),
        sa.Column("access_jti", sa.String(64), nullable=True),
        sa.Column("access_exp", sa.Float, nullable=True),
        sa.Column("refresh_family", sa.String(32), nullable=True),
    )
    op.create_index("ix_authorization_codes_user_id", "authorization_codes", ["user_id"])
    op.create_index("ix_authorization_codes_expires_at", "authorization_codes", ["expires_at"])
    op.create_table(
        "refresh_tokens",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("family_id", sa.String(32), nullable=False),
        sa.Column("client_id", sa.String(2000), nullable=False),
        sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("scopes", sa.JSON, nullable=False),
        sa.Column("resources", sa.JSON, nullable=False),
        sa.Column("auth_time", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("used_at", sa.Float, nullable=True),
        sa.Column("revoked_at", sa.Float, nullable=True),
        sa.Column("access_jti", sa.String(64), nullable=True),
        sa.Column("access_exp", sa.Float, nullable=True),
    )
    op.create_index("ix_refresh_tokens_family_id", "refresh_tokens", ["family_id"])
    op.create_index("ix_refresh_tokens_user_id", "refresh_tokens", ["user_id"])
    op.create_index("ix_refresh_tokens_expires_at", "refresh_tokens", ["expires_at"])


def downgrade() -> None:
    op.drop_table("refresh_tokens")
    op.drop_table("authorization_codes")
    op.drop_table("consents")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("tokens_valid_after")
        batch.drop_column("email_verified")
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("redirect_uris")
