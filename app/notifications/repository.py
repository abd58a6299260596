from __future__ import annotations

import uuid
from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.messages.models import Message
from app.messages.repository import cancel_where
from app.notifications.models import Notification


async def add(session: AsyncSession, notification: Notification) -> Notification:
    session.add(notification)
    await session.flush()
    return notification


async def latest(session: AsyncSession, *, reference: str, event: str) -> Notification | None:
    statement = (
        select(Notification)
        .where(Notification.reference == reference, Notification.event == event)
        .order_by(Notification.created_at.desc(), Notification.id.desc())
        .limit(1)
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def recipient_ids(session: AsyncSession, notification_id: uuid.UUID) -> list[uuid.UUID]:
    """The users a notification was for (sent to, or recorded as suppressed)."""
    statement = (
        select(Message.user_id)
        .where(Message.notification_id == notification_id, Message.user_id.is_not(None))
        .distinct()
    )
    return [user_id for user_id in (await session.execute(statement)).scalars() if user_id]


async def cancel_pending(
    session: AsyncSession, *, reference: str, events: Collection[str], detail: str
) -> list[uuid.UUID]:
    """Cancels the messages of these events about `reference` that Twilio does not have yet."""
    of_these = select(Notification.id).where(
        Notification.reference == reference, Notification.event.in_(list(events))
    )
    return await cancel_where(
        session, Message.notification_id.in_(of_these.scalar_subquery()), detail=detail
    )
