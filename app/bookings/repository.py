from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.bookings.models import Booking
from app.messages.models import Message
from app.notifications.models import Notification


async def upsert(
    session: AsyncSession,
    *,
    booking_id: str,
    user_id: uuid.UUID,
    starts_at: datetime,
    details: dict[str, Any],
    offsets: list[int],
    requested_by: str,
) -> Booking:
    """Creates or replaces the booking; its row stays locked until the commit, so two
    concurrent changes of one booking take turns."""
    values = {
        "user_id": user_id,
        "starts_at": starts_at,
        "details": details,
        "reminder_offsets_minutes": offsets,
        "requested_by": requested_by,
        "cancelled_at": None,
    }
    statement = (
        insert(Booking)
        .values(id=uuid.uuid4(), booking_id=booking_id, **values)
        .on_conflict_do_update(
            index_elements=[Booking.booking_id], set_={**values, "updated_at": func.now()}
        )
        .returning(Booking)
        .execution_options(populate_existing=True)
    )
    return (await session.execute(statement)).scalar_one()


async def get(
    session: AsyncSession, booking_id: str, *, for_update: bool = False
) -> Booking | None:
    statement = select(Booking).where(Booking.booking_id == booking_id)
    if for_update:
        statement = statement.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(statement)).scalar_one_or_none()


async def mark_cancelled(session: AsyncSession, booking_id: str) -> None:
    await session.execute(
        update(Booking)
        .where(Booking.booking_id == booking_id, Booking.cancelled_at.is_(None))
        .values(cancelled_at=func.now())
    )


async def reminder_messages(
    session: AsyncSession, booking_id: str, events: frozenset[str]
) -> list[tuple[str, Message]]:
    """The booking's reminder messages, newest first, with their event."""
    statement = (
        select(Notification.event, Message)
        .join(Message, Message.notification_id == Notification.id)
        .where(Notification.reference == booking_id, Notification.event.in_(list(events)))
        .order_by(Message.created_at.desc())
    )
    return [(row[0], row[1]) for row in (await session.execute(statement)).all()]
