from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    Integer,
    Select,
    String,
    and_,
    cast,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession

from app.messages.models import Message, MessageEvent
from app.messages.status import Status
from app.users.models import User


@dataclass(frozen=True, slots=True)
class MessageFilter:
    user_id: uuid.UUID | None = None
    requested_by: str | None = None
    status: Status | None = None
    category: str | None = None
    reference: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


async def add(session: AsyncSession, message: Message, event: MessageEvent) -> Message:
    session.add(message)
    await session.flush()
    event.message_id = message.id
    session.add(event)
    await session.flush()
    return message


def _with_owner() -> Select[Message, str]:
    # An outer join: the owner's external id is None for messages sent to a bare number.
    return select(Message, User.external_id).outerjoin(User, User.id == Message.user_id)


async def get(session: AsyncSession, message_id: uuid.UUID) -> tuple[Message, str | None] | None:
    row = (await session.execute(_with_owner().where(Message.id == message_id))).first()
    return (row[0], row[1]) if row else None


async def history(
    session: AsyncSession, message_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[MessageEvent]]:
    statement = (
        select(MessageEvent)
        .where(MessageEvent.message_id.in_(message_ids))
        .order_by(MessageEvent.message_id, MessageEvent.id)
    )
    events: dict[uuid.UUID, list[MessageEvent]] = defaultdict(list)
    for event in (await session.execute(statement)).scalars():
        events[event.message_id].append(event)
    return events


async def page(
    session: AsyncSession,
    where: MessageFilter,
    *,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[tuple[Message, str | None]]:
    """Newest first; `before` is the (created_at, id) of the last message already shown."""
    statement = _with_owner().order_by(Message.created_at.desc(), Message.id.desc()).limit(limit)
    conditions = []
    if where.user_id is not None:
        conditions.append(Message.user_id == where.user_id)
    if where.requested_by is not None:
        conditions.append(Message.requested_by == where.requested_by)
    if where.status is not None:
        conditions.append(Message.status == where.status)
    if where.category is not None:
        conditions.append(Message.category == where.category)
    if where.reference is not None:
        conditions.append(Message.reference == where.reference)
    if where.created_after is not None:
        conditions.append(Message.created_at >= where.created_after)
    if where.created_before is not None:
        conditions.append(Message.created_at < where.created_before)
    if before is not None:
        created_at, message_id = before
        conditions.append(
            or_(
                Message.created_at < created_at,
                and_(Message.created_at == created_at, Message.id < message_id),
            )
        )
    if conditions:
        statement = statement.where(*conditions)
    return [(row[0], row[1]) for row in (await session.execute(statement)).all()]


# Not handed to Twilio and no worker handing it: scheduled, queued, or waiting for a retry
# after an attempt Twilio certainly refused. (A message with a SID is Twilio's, whatever our
# status says.)
_NOT_AT_TWILIO = and_(
    Message.twilio_sid.is_(None),
    or_(
        Message.status.in_([Status.SCHEDULED, Status.QUEUED]),
        and_(
            Message.status == Status.SENDING,
            Message.lease_until.is_(None),
            Message.needs_reconciliation.is_(False),
        ),
    ),
)


async def cancel(session: AsyncSession, message_id: uuid.UUID) -> Message | None:
    """Cancels a message no worker holds and Twilio cannot have: scheduled, queued, or
    waiting for a retry after an attempt Twilio certainly refused."""
    statement = (
        update(Message)
        .where(Message.id == message_id, _NOT_AT_TWILIO)
        .values(status=Status.CANCELLED, final_at=text("now()"))
        .returning(Message)
        .execution_options(populate_existing=True)
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def add_events(
    session: AsyncSession,
    message_ids: Sequence[uuid.UUID],
    status: Status,
    *,
    source: str,
    twilio_status: str | None = None,
    error_code: int | None = None,
    detail: str | None = None,
) -> None:
    rows = select(
        func.unnest(cast(list(message_ids), ARRAY(UUID))),
        literal(status.value, String),
        literal(twilio_status, String),
        literal(error_code, Integer),
        literal(source, String),
        literal(detail, String),
    )
    await session.execute(
        insert(MessageEvent).from_select(
            [
                MessageEvent.message_id,
                MessageEvent.status,
                MessageEvent.twilio_status,
                MessageEvent.error_code,
                MessageEvent.source,
                MessageEvent.detail,
            ],
            rows,
        )
    )


async def forget_recipient(session: AsyncSession, user_id: uuid.UUID) -> list[uuid.UUID]:
    """A user is erased: what was not yet handed to Twilio is cancelled, and every message of
    theirs forgets the number (a message Twilio already has is still tracked by its SID)."""
    pending = (
        update(Message)
        .where(Message.user_id == user_id, _NOT_AT_TWILIO)
        .values(status=Status.CANCELLED, final_at=func.now())
        .returning(Message.id)
    )
    cancelled = list((await session.execute(pending)).scalars())
    await session.execute(
        update(Message).where(Message.user_id == user_id).values(to_encrypted=None, to_index=None)
    )
    if cancelled:
        await add_events(session, cancelled, Status.CANCELLED, source="api", detail="user erased")
    return cancelled
