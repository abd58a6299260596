"""analytics: a covering index on messages(created_at) for index-only period scans

Revision ID: 0006_analytics_index
Revises: 0005_analytics
Create Date: 2026-11-21 23:40:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006_analytics_index"
down_revision: str | None = "0005_analytics"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INCLUDED = ["category", "status", "error_code", "segments", "price", "price_unit"]


def upgrade() -> None:
    # CONCURRENTLY: on a full messages table the build takes a while and must not block
    # sending meanwhile. It cannot run inside a transaction.
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_messages_analytics",
            "messages",
            ["created_at"],
            unique=False,
            postgresql_include=INCLUDED,
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_messages_analytics", table_name="messages", postgresql_concurrently=True)
