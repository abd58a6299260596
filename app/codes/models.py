from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, LargeBinary, String, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

from app.core.database import Base


class Verification(Base):
    """A user's current code for one purpose. The code itself is made when its message is sent
    and only its keyed hash is kept; a new request replaces the row."""

    __tablename__ = "verifications"
    __table_args__ = (UniqueConstraint("user_id", "purpose"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(24))
    # The number the code goes to: a check passes only while the user still has it.
    phone_index: Mapped[bytes] = mapped_column(LargeBinary(32))
    phone_region: Mapped[str | None] = mapped_column(String(2))
    code_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    wrong_tries: Mapped[int] = mapped_column(Integer, server_default="0")
    message_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("messages.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    consumed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
