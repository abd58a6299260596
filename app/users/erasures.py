from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, Integer, LargeBinary, String, func
from sqlalchemy.orm import Mapped, mapped_column

from app.core.database import Base


class Erasure(Base):
    """That a user was erased, when and at whose request, without who: the user id is kept
    only as a keyed hash, so the record can confirm an erasure asked about by id."""

    __tablename__ = "erasures"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id_hash: Mapped[bytes] = mapped_column(LargeBinary(32), index=True)
    requested_by: Mapped[str] = mapped_column(String(300))
    messages_anonymised: Mapped[int] = mapped_column(Integer)
    erased_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
