from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, func, true
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.expression import false

from app.core.database import Base


class SmsPreferences(Base):
    """One row per user; the defaults are the booking platform's (all on but 2FA, marketing)."""

    __tablename__ = "sms_preferences"
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 (SQLAlchemy reads it per class)

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    sms_enabled: Mapped[bool] = mapped_column(Boolean, server_default=true())
    booking_confirmations: Mapped[bool] = mapped_column(Boolean, server_default=true())
    booking_reminders: Mapped[bool] = mapped_column(Boolean, server_default=true())
    status_updates: Mapped[bool] = mapped_column(Boolean, server_default=true())
    payment_confirmations: Mapped[bool] = mapped_column(Boolean, server_default=true())
    ticket_updates: Mapped[bool] = mapped_column(Boolean, server_default=true())
    two_factor_auth: Mapped[bool] = mapped_column(Boolean, server_default=false())
    marketing: Mapped[bool] = mapped_column(Boolean, server_default=false())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
