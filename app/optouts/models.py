from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Identity, LargeBinary, String, func
from sqlalchemy.orm import Mapped, mapped_column

from app.core.database import Base


class Suppression(Base):
    """A number that said STOP (or that Twilio reports as unsubscribed): nothing is sent to
    it until it says START. Kept by blind index only."""

    __tablename__ = "suppressions"

    phone_index: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ConsentEvent(Base):
    """Opt-in and opt-out history, as the law asks for it: what, when, from where."""

    __tablename__ = "consent_events"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    phone_index: Mapped[bytes] = mapped_column(LargeBinary(32), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # opt_out, opt_in, help
    keyword: Mapped[str | None] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(32))  # inbound_sms, twilio_error, …
    message_sid: Mapped[str | None] = mapped_column(String(34))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
