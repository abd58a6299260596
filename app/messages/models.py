from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.core.database import Base, TimestampMixin
from app.messages.status import STATUSES


class Message(TimestampMixin, Base):
    """One SMS to one number: the outbox row the worker sends from, and its history's head."""

    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint(
            "status IN (" + ", ".join(f"'{status}'" for status in STATUSES) + ")",
            name="status_known",
        ),
        # Small partial indexes on what is pending: the sweeper's and the poller's queues.
        Index(
            "ix_messages_due",
            "next_attempt_at",
            postgresql_where=text("twilio_sid IS NULL AND status IN ('queued', 'sending')"),
        ),
        Index("ix_messages_scheduled", "send_at", postgresql_where=text("status = 'scheduled'")),
        Index(
            "ix_messages_awaiting_status",
            "updated_at",
            postgresql_where=text("twilio_sid IS NOT NULL AND status IN ('sending', 'sent')"),
        ),
        Index(
            "ix_messages_awaiting_price",
            "final_at",
            postgresql_where=text("twilio_sid IS NOT NULL AND price_checked_at IS NULL"),
        ),
        Index("ix_messages_created", "created_at", "id"),
        # Retention's body erasure reads only the bodies still held, not a year of erased ones
        # (migration 0007).
        Index("ix_messages_body_kept", "created_at", postgresql_where=text("body IS NOT NULL")),
        # Analytics over a period reads only these columns: an index-only scan, no heap
        # (migration 0006; measured by bench/analytics.py).
        Index(
            "ix_messages_analytics",
            "created_at",
            postgresql_include=[
                "category",
                "status",
                "error_code",
                "segments",
                "price",
                "price_unit",
            ],
        ),
        # The indexes of nullable columns skip NULLs: every query compares these with a value,
        # and each status change of a campaign message (none of the four set, until Twilio's
        # SID) would write an entry in each (migration 0009).
        Index(
            "ix_messages_user_created",
            "user_id",
            "created_at",
            postgresql_where=text("user_id IS NOT NULL"),
        ),
        Index("ix_messages_reference", "reference", postgresql_where=text("reference IS NOT NULL")),
        Index(
            "ix_messages_notification_id",
            "notification_id",
            postgresql_where=text("notification_id IS NOT NULL"),
        ),
        Index(
            "uq_messages_twilio_sid",
            "twilio_sid",
            unique=True,
            postgresql_where=text("twilio_sid IS NOT NULL"),
        ),
        # What a service without sms:read lists (its own), and look-ups by the caller's id.
        Index("ix_messages_requested_by_created", "requested_by", "created_at"),
        # A campaign's chunks still to send and its cancellation: campaign messages only
        # (migration 0008). Its progress counts are kept apart (migration 0010).
        Index(
            "ix_messages_campaign",
            "campaign_id",
            "status",
            "campaign_chunk",
            postgresql_where=text("campaign_id IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # None only for a message suppressed because its user has no number.
    to_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    to_index: Mapped[bytes | None] = mapped_column(LargeBinary(32), index=True)
    to_region: Mapped[str | None] = mapped_column(String(2))
    sender: Mapped[str | None] = mapped_column(String(64))
    # None for one-time codes (never stored) and after the retention period.
    body: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    twilio_status: Mapped[str | None] = mapped_column(String(24))
    twilio_sid: Mapped[str | None] = mapped_column(String(34))
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(Text)
    suppression_reason: Mapped[str | None] = mapped_column(String(32))
    encoding: Mapped[str] = mapped_column(String(8))
    segments: Mapped[int] = mapped_column(Integer)
    price: Mapped[Decimal | None] = mapped_column(Numeric(12, 5))
    price_unit: Mapped[str | None] = mapped_column(String(8))
    reference: Mapped[str | None] = mapped_column(String(200))
    requested_by: Mapped[str] = mapped_column(String(300))
    send_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set while a worker holds the message. An attempt that ends (well or not) clears it; one
    # still set after it expired means a worker died mid-attempt.
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The last attempt may have reached Twilio: look for it there before sending again.
    needs_reconciliation: Mapped[bool] = mapped_column(Boolean, server_default="false")
    # When the first attempt whose outcome we never learned began: Twilio's copy, if any, was
    # created after this.
    ambiguous_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    final_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    price_checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The event this message was rendered from (notify, reminders), if any.
    notification_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("notifications.id", ondelete="SET NULL")
    )
    # The bulk campaign this message is part of, if any, and the chunk (one arq job) that
    # sends it; None for a campaign's suppressed messages, which are never sent.
    campaign_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("campaigns.id", ondelete="SET NULL")
    )
    campaign_chunk: Mapped[int | None] = mapped_column(Integer)


class MessageEvent(Base):
    """Every change of a message's status, with when and who (api, worker, callback, …)."""

    __tablename__ = "message_events"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16))
    twilio_status: Mapped[str | None] = mapped_column(String(24))
    error_code: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
