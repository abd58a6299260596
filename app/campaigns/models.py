from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.core.database import Base, TimestampMixin


class CampaignState(StrEnum):
    """What was decided about a campaign. Whether it is `scheduled` or `running` is read from
    its messages (app/campaigns/service.py), not stored."""

    ACTIVE = "active"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    COMPLETED = "completed"


# No message of a campaign in these states may be claimed (app/outbox/repository.py).
HALTED = (CampaignState.PAUSED, CampaignState.CANCELLED)


class Campaign(TimestampMixin, Base):
    """One bulk send: its messages carry its id (`messages.campaign_id`) and the chunk that
    sends them (`messages.campaign_chunk`)."""

    __tablename__ = "campaigns"
    __table_args__ = (
        CheckConstraint(
            "state IN (" + ", ".join(f"'{state}'" for state in CampaignState) + ")",
            name="state_known",
        ),
        # What the campaign sweep walks: the few campaigns not finished yet.
        Index("ix_campaigns_unfinished", "state", postgresql_where=text("finished_at IS NULL")),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    state: Mapped[str] = mapped_column(String(16))
    requested_by: Mapped[str] = mapped_column(String(300))
    reference: Mapped[str | None] = mapped_column(String(200))
    send_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Message rows written (to send and suppressed), and the chunks the ones to send are in.
    messages: Mapped[int] = mapped_column(Integer)
    chunks: Mapped[int] = mapped_column(Integer)
    # The estimate answered when it was accepted: counts only, no number, no text.
    estimate: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # Completed, or cancelled with every message not yet at Twilio cancelled.
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CampaignCount(Base):
    """A campaign's messages in one status, handed to Twilio or not: the totals the campaign
    sweep folds the deltas into (migration 0010 says how they are kept)."""

    __tablename__ = "campaign_counts"

    campaign_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    at_twilio: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    messages: Mapped[int] = mapped_column(BigInteger)


# What each statement on `messages` changed in a campaign's counts, written by the table's
# triggers (migration 0010), insert-only until the sweep folds them into campaign_counts. No
# key: nothing ever looks up one row, and no foreign key, as the triggers never fail a write.
campaign_count_deltas = Table(
    "campaign_count_deltas",
    Base.metadata,
    Column("campaign_id", Uuid(), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("at_twilio", Boolean, nullable=False),
    Column("messages", BigInteger, nullable=False),
)
