"""verifications (one-time codes)

Revision ID: 0003_codes
Revises: 0002_messages
Create Date: 2026-11-21 20:51:25.859805
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_codes"
down_revision: str | None = "0002_messages"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "verifications",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.String(length=24), nullable=False),
        sa.Column("phone_index", sa.LargeBinary(length=32), nullable=False),
        sa.Column("phone_region", sa.String(length=2), nullable=True),
        sa.Column("code_hash", sa.LargeBinary(length=32), nullable=True),
        sa.Column("wrong_tries", sa.Integer(), server_default="0", nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_verifications_message_id_messages"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_verifications_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_verifications")),
        sa.UniqueConstraint("user_id", "purpose", name=op.f("uq_verifications_user_id")),
    )
    op.create_index(
        op.f("ix_verifications_message_id"), "verifications", ["message_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_verifications_message_id"), table_name="verifications")
    op.drop_table("verifications")
