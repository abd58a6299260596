"""daily stats of deleted messages, erasure records

Revision ID: 0005_analytics
Revises: 0004_notifications
Create Date: 2026-11-21 22:16:29.513657
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_analytics"
down_revision: str | None = "0004_notifications"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("requested_by", sa.String(length=300), nullable=False),
        sa.Column("messages_anonymised", sa.Integer(), nullable=False),
        sa.Column(
            "erased_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erasures")),
    )
    op.create_index(op.f("ix_erasures_user_id_hash"), "erasures", ["user_id_hash"], unique=False)
    op.create_table(
        "message_daily_stats",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_code", sa.Integer(), nullable=False),
        sa.Column("price_unit", sa.String(length=8), nullable=False),
        sa.Column("messages", sa.BigInteger(), nullable=False),
        sa.Column("segments", sa.BigInteger(), nullable=False),
        sa.Column("price", sa.Numeric(precision=16, scale=5), nullable=False),
        sa.Column("unpriced_segments", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day",
            "category",
            "status",
            "error_code",
            "price_unit",
            name=op.f("pk_message_daily_stats"),
        ),
    )


def downgrade() -> None:
    op.drop_table("message_daily_stats")
    op.drop_index(op.f("ix_erasures_user_id_hash"), table_name="erasures")
    op.drop_table("erasures")
