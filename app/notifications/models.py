from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Index, String, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.core.database import Base


class Notification(Base):
    """One event sent to its recipients (a notify call, a booking's reminder): the data is
    kept so the event can be rendered again, in each recipient's current language, on resend,
    until retention erases it with the bodies it rendered (app/retention)."""

    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_reference_event", "reference", "event"),
        # Retention: data erased after the body retention (only those still holding it are
        # read), rows deleted after the message retention (migration 0007).
        Index(
            "ix_notifications_data_kept",
            "created_at",
            postgresql_where=text("data <> '{}'::jsonb"),
        ),
        Index("ix_notifications_created", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    event: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    reference: Mapped[str | None] = mapped_column(String(200))
    requested_by: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
