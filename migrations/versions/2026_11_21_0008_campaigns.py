"""campaigns: bulk sends, and their messages' campaign and chunk

Revision ID: 0008_campaigns
Revises: 0007_retention_index
Create Date: 2026-11-21 23:55:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008_campaigns"
down_revision: str | None = "0007_retention_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=300), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=True),
        sa.Column("send_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("estimate", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "state IN ('active', 'paused', 'cancelled', 'completed')",
            name=op.f("ck_campaigns_state_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
    )
    op.create_index(
        "ix_campaigns_unfinished",
        "campaigns",
        ["state"],
        unique=False,
        postgresql_where=sa.text("finished_at IS NULL"),
    )
    # Nullable without a default: no table rewrite.
    op.add_column("messages", sa.Column("campaign_id", sa.Uuid(), nullable=True))
    op.add_column("messages", sa.Column("campaign_chunk", sa.Integer(), nullable=True))
    # NOT VALID, then VALIDATE on its own: checking the existing rows does not block writes.
    op.execute(
        "ALTER TABLE messages ADD CONSTRAINT fk_messages_campaign_id_campaigns "
        "FOREIGN KEY (campaign_id) REFERENCES campaigns (id) ON DELETE SET NULL NOT VALID"
    )
    # CONCURRENTLY: sending goes on while a large messages table is indexed. Both outside the
    # transaction, which has committed the short lock of the ALTERs above by then.
    with op.get_context().autocommit_block():
        op.execute("ALTER TABLE messages VALIDATE CONSTRAINT fk_messages_campaign_id_campaigns")
        op.create_index(
            "ix_messages_campaign",
            "messages",
            ["campaign_id", "status", "campaign_chunk"],
            unique=False,
            postgresql_where=sa.text("campaign_id IS NOT NULL"),
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_messages_campaign", table_name="messages", postgresql_concurrently=True)
    op.drop_constraint("fk_messages_campaign_id_campaigns", "messages", type_="foreignkey")
    op.drop_column("messages", "campaign_chunk")
    op.drop_column("messages", "campaign_id")
    op.drop_index("ix_campaigns_unfinished", table_name="campaigns")
    op.drop_table("campaigns")
