"""notifications (events kept for resends) and bookings (reminders)

Revision ID: 0004_notifications
Revises: 0003_codes
Create Date: 2026-11-21 21:44:21.757025
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004_notifications"
down_revision: str | None = "0003_codes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=True),
        sa.Column("requested_by", sa.String(length=300), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    op.create_index(
        "ix_notifications_reference_event", "notifications", ["reference", "event"], unique=False
    )
    op.create_table(
        "bookings",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("booking_id", sa.String(length=200), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("reminder_offsets_minutes", postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.Column("requested_by", sa.String(length=300), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
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
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_bookings_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bookings")),
        sa.UniqueConstraint("booking_id", name=op.f("uq_bookings_booking_id")),
    )
    op.create_index(op.f("ix_bookings_user_id"), "bookings", ["user_id"], unique=False)
    op.add_column("messages", sa.Column("notification_id", sa.Uuid(), nullable=True))
    op.create_index(
        op.f("ix_messages_notification_id"), "messages", ["notification_id"], unique=False
    )
    op.create_foreign_key(
        op.f("fk_messages_notification_id_notifications"),
        "messages",
        "notifications",
        ["notification_id"],
        ["id"],
        ondelete="SET NULL",
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("fk_messages_notification_id_notifications"), "messages", type_="foreignkey"
    )
    op.drop_index(op.f("ix_messages_notification_id"), table_name="messages")
    op.drop_column("messages", "notification_id")
    op.drop_index(op.f("ix_bookings_user_id"), table_name="bookings")
    op.drop_table("bookings")
    op.drop_index("ix_notifications_reference_event", table_name="notifications")
    op.drop_table("notifications")
