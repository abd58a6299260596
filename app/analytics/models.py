from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy import BigInteger, Date, Integer, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.database import Base


class MessageDailyStats(Base):
    """The counts of messages deleted by retention, per UTC day of creation: analytics adds
    them to the rows still kept, so old periods keep their figures."""

    __tablename__ = "message_daily_stats"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    category: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    # 0 for "no error" (a primary key column cannot be NULL).
    error_code: Mapped[int] = mapped_column(Integer, primary_key=True)
    # "" when no price was reported.
    price_unit: Mapped[str] = mapped_column(String(8), primary_key=True)
    messages: Mapped[int] = mapped_column(BigInteger)
    segments: Mapped[int] = mapped_column(BigInteger)
    # Twilio's prices, summed (negative: charges), over the messages that had one.
    price: Mapped[Decimal] = mapped_column(Numeric(16, 5))
    # Segments of the messages without a price, for the estimate.
    unpriced_segments: Mapped[int] = mapped_column(BigInteger)
