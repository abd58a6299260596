"""foundation: users, preferences, topics, api keys

Revision ID: 0001_foundation
Revises: (none)
Create Date: 2026-11-21 19:33:46.716708
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_foundation"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("scopes", postgresql.ARRAY(sa.String(length=32)), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("phone_encrypted", sa.LargeBinary(), nullable=True),
        sa.Column("phone_index", sa.LargeBinary(length=32), nullable=True),
        sa.Column("phone_region", sa.String(length=2), nullable=True),
        sa.Column("phone_verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locale", sa.String(length=35), server_default="en", nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=True),
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
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("external_id", name=op.f("uq_users_external_id")),
    )
    op.create_index(op.f("ix_users_phone_index"), "users", ["phone_index"], unique=False)
    op.create_table(
        "sms_preferences",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("sms_enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "booking_confirmations", sa.Boolean(), server_default=sa.text("true"), nullable=False
        ),
        sa.Column(
            "booking_reminders", sa.Boolean(), server_default=sa.text("true"), nullable=False
        ),
        sa.Column("status_updates", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "payment_confirmations", sa.Boolean(), server_default=sa.text("true"), nullable=False
        ),
        sa.Column("ticket_updates", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("two_factor_auth", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("marketing", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_sms_preferences_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_sms_preferences")),
    )
    op.create_table(
        "topic_subscriptions",
        sa.Column("topic", sa.String(length=100), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_topic_subscriptions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("topic", "user_id", name=op.f("pk_topic_subscriptions")),
    )
    op.create_index(
        op.f("ix_topic_subscriptions_user_id"), "topic_subscriptions", ["user_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_topic_subscriptions_user_id"), table_name="topic_subscriptions")
    op.drop_table("topic_subscriptions")
    op.drop_table("sms_preferences")
    op.drop_index(op.f("ix_users_phone_index"), table_name="users")
    op.drop_table("users")
    op.drop_table("api_keys")
