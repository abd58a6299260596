"""indexes of retention: bodies still held, notifications by age and with data

Revision ID: 0007_retention_index
Revises: 0006_analytics_index
Create Date: 2026-11-21 23:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_retention_index"
down_revision: str | None = "0006_analytics_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # CONCURRENTLY: sending goes on while a large messages table is indexed.
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_messages_body_kept",
            "messages",
            ["created_at"],
            unique=False,
            postgresql_where=sa.text("body IS NOT NULL"),
            postgresql_concurrently=True,
        )
        op.create_index(
            "ix_notifications_created",
            "notifications",
            ["created_at"],
            unique=False,
            postgresql_concurrently=True,
        )
        op.create_index(
            "ix_notifications_data_kept",
            "notifications",
            ["created_at"],
            unique=False,
            postgresql_where=sa.text("data <> '{}'::jsonb"),
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, table in (
            ("ix_notifications_created", "notifications"),
            ("ix_notifications_data_kept", "notifications"),
            ("ix_messages_body_kept", "messages"),
        ):
            op.drop_index(name, table_name=table, postgresql_concurrently=True)
