"""messages, events, suppressions, consent, idempotency

Revision ID: 0002_messages
Revises: 0001_foundation
Create Date: 2026-11-21 20:38:43.676259
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_messages"
down_revision: str | None = "0001_foundation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "consent_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("phone_index", sa.LargeBinary(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("keyword", sa.String(length=32), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("message_sid", sa.String(length=34), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_events")),
    )
    op.create_index(
        op.f("ix_consent_events_phone_index"), "consent_events", ["phone_index"], unique=False
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("principal", sa.String(length=300), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response_body", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("principal", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(
        op.f("ix_idempotency_keys_expires_at"), "idempotency_keys", ["expires_at"], unique=False
    )
    op.create_table(
        "suppressions",
        sa.Column("phone_index", sa.LargeBinary(length=32), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("phone_index", name=op.f("pk_suppressions")),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("to_encrypted", sa.LargeBinary(), nullable=True),
        sa.Column("to_index", sa.LargeBinary(length=32), nullable=True),
        sa.Column("to_region", sa.String(length=2), nullable=True),
        sa.Column("sender", sa.String(length=64), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("twilio_status", sa.String(length=24), nullable=True),
        sa.Column("twilio_sid", sa.String(length=34), nullable=True),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("suppression_reason", sa.String(length=32), nullable=True),
        sa.Column("encoding", sa.String(length=8), nullable=False),
        sa.Column("segments", sa.Integer(), nullable=False),
        sa.Column("price", sa.Numeric(precision=12, scale=5), nullable=True),
        sa.Column("price_unit", sa.String(length=8), nullable=True),
        sa.Column("reference", sa.String(length=200), nullable=True),
        sa.Column("requested_by", sa.String(length=300), nullable=False),
        sa.Column("send_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("needs_reconciliation", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("ambiguous_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("final_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("price_checked_at", sa.DateTime(timezone=True), nullable=True),
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
            "status IN ('scheduled', 'queued', 'sending', 'sent', 'delivered', "
            "'undelivered', 'failed', 'cancelled', 'suppressed')",
            name=op.f("ck_messages_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_messages_user_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint("twilio_sid", name=op.f("uq_messages_twilio_sid")),
    )
    op.create_index(
        "ix_messages_awaiting_price",
        "messages",
        ["final_at"],
        unique=False,
        postgresql_where=sa.text("twilio_sid IS NOT NULL AND price_checked_at IS NULL"),
    )
    op.create_index(
        "ix_messages_awaiting_status",
        "messages",
        ["updated_at"],
        unique=False,
        postgresql_where=sa.text("twilio_sid IS NOT NULL AND status IN ('sending', 'sent')"),
    )
    op.create_index("ix_messages_created", "messages", ["created_at", "id"], unique=False)
    op.create_index(
        "ix_messages_due",
        "messages",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("twilio_sid IS NULL AND status IN ('queued', 'sending')"),
    )
    op.create_index("ix_messages_reference", "messages", ["reference"], unique=False)
    op.create_index(
        "ix_messages_requested_by_created", "messages", ["requested_by", "created_at"], unique=False
    )
    op.create_index(
        "ix_messages_scheduled",
        "messages",
        ["send_at"],
        unique=False,
        postgresql_where=sa.text("status = 'scheduled'"),
    )
    op.create_index(op.f("ix_messages_to_index"), "messages", ["to_index"], unique=False)
    op.create_index("ix_messages_user_created", "messages", ["user_id", "created_at"], unique=False)
    op.create_table(
        "message_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("twilio_status", sa.String(length=24), nullable=True),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_events_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_events")),
    )
    op.create_index(
        op.f("ix_message_events_message_id"), "message_events", ["message_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_message_events_message_id"), table_name="message_events")
    op.drop_table("message_events")
    op.drop_index("ix_messages_user_created", table_name="messages")
    op.drop_index(op.f("ix_messages_to_index"), table_name="messages")
    op.drop_index(
        "ix_messages_scheduled",
        table_name="messages",
        postgresql_where=sa.text("status = 'scheduled'"),
    )
    op.drop_index("ix_messages_requested_by_created", table_name="messages")
    op.drop_index("ix_messages_reference", table_name="messages")
    op.drop_index(
        "ix_messages_due",
        table_name="messages",
        postgresql_where=sa.text("twilio_sid IS NULL AND status IN ('queued', 'sending')"),
    )
    op.drop_index("ix_messages_created", table_name="messages")
    op.drop_index(
        "ix_messages_awaiting_status",
        table_name="messages",
        postgresql_where=sa.text("twilio_sid IS NOT NULL AND status IN ('sending', 'sent')"),
    )
    op.drop_index(
        "ix_messages_awaiting_price",
        table_name="messages",
        postgresql_where=sa.text("twilio_sid IS NOT NULL AND price_checked_at IS NULL"),
    )
    op.drop_table("messages")
    op.drop_table("suppressions")
    op.drop_index(op.f("ix_idempotency_keys_expires_at"), table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_index(op.f("ix_consent_events_phone_index"), table_name="consent_events")
    op.drop_table("consent_events")
