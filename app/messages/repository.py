from __future__ import annotations

import functools
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    cast,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import ApiKey
from app.messages.metrics import count_entered
from app.messages.models import Message, MessageEvent
from app.messages.status import Status
from app.notifications.models import Notification
from app.optouts import repository as optouts
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


async def add_many(
    session: AsyncSession, messages: Sequence[Message], events: Sequence[MessageEvent]
) -> tuple[list[Message], list[MessageEvent]]:
    """Inserts messages and their first events (the ORM batches each table's rows into a few
    multi-row INSERTs). The events come back as stored, times and ids included, so a caller
    can answer with a message's history without reading it again."""
    session.add_all(messages)
    await session.flush()
    return list(messages), await _insert_events_returning(session, events)


async def add_one(
    session: AsyncSession, message: Message, event: MessageEvent, *, unless_opted_out: bool = False
) -> bool:
    """Inserts one message and its first event in a single statement, in Core: one round trip
    and no unit of work on the path of every POST /send. What the database sets (times, the
    event's id, the attempt count) is filled in on both objects, which stay out of the
    session: nothing later in the request changes them. With `unless_opted_out`, nothing is
    inserted (False) if the message's number said STOP: the check costs no round trip."""
    message_values = _set_columns(message, _MESSAGE_COLUMNS)
    event_values = _set_columns(event, _EVENT_COLUMNS)
    event_values.pop("message_id", None)
    statement = _insert_one_statement(
        tuple(message_values), tuple(event_values), unless_opted_out=unless_opted_out
    )
    parameters = {
        **message_values,
        **{f"event_{key}": value for key, value in event_values.items()},
    }
    connection = await session.connection()
    row = (await connection.execute(statement, parameters)).one_or_none()
    if row is None:
        return False
    message.created_at, message.updated_at, message.attempts = row[0], row[1], row[2]
    event.id, event.created_at = row[3], row[4]
    return True


@functools.cache
def _insert_one_statement(
    message_columns: tuple[str, ...], event_columns: tuple[str, ...], *, unless_opted_out: bool
) -> Select[datetime, datetime, int, int, datetime]:
    """Built once per set of columns, with a bound parameter for each: building it per call
    (CTE column proxies) cost more CPU than running it."""
    columns = Message.__table__.c
    parameters = {key: bindparam(key, type_=columns[key].type) for key in message_columns}
    values = select(*parameters.values())
    if unless_opted_out:
        values = values.where(~optouts.is_suppressed_clause(parameters["to_index"]))
    message_row = (
        insert(Message)
        .from_select(message_columns, values)
        .returning(Message.id, Message.created_at, Message.updated_at, Message.attempts)
        .cte("message_row")
    )
    event_row = (
        insert(MessageEvent)
        .from_select(
            ["message_id", *event_columns],
            select(
                message_row.c.id,
                *(
                    bindparam(f"event_{key}", type_=MessageEvent.__table__.c[key].type)
                    for key in event_columns
                ),
            ),
        )
        .returning(MessageEvent.message_id, MessageEvent.id, MessageEvent.created_at)
        .cte("event_row")
    )
    return select(
        message_row.c.created_at,
        message_row.c.updated_at,
        message_row.c.attempts,
        event_row.c.id,
        event_row.c.created_at.label("event_created_at"),
    ).join_from(message_row, event_row, event_row.c.message_id == message_row.c.id)


def _set_columns(row: Message | MessageEvent, keys: list[str]) -> dict[str, object]:
    """The column values set on a new ORM object; the others take their defaults."""
    return {key: row.__dict__[key] for key in keys if key in row.__dict__}


_MESSAGE_COLUMNS = [attribute.key for attribute in sa_inspect(Message).column_attrs]
_EVENT_COLUMNS = [attribute.key for attribute in sa_inspect(MessageEvent).column_attrs]


async def _insert_events_returning(
    session: AsyncSession, events: Sequence[MessageEvent]
) -> list[MessageEvent]:
    if not events:
        return []
    keys = [attribute.key for attribute in sa_inspect(MessageEvent).column_attrs]
    # The attributes set on each new event; unset ones take the column's default.
    values = [{key: row.__dict__[key] for key in keys if key in row.__dict__} for row in events]
    statement = insert(MessageEvent).returning(MessageEvent, sort_by_parameter_order=True)
    return list((await session.scalars(statement, values)).all())


def _with_owner() -> Select[Message, str]:
    # An outer join: the owner's external id is None for messages sent to a bare number.
    return select(Message, User.external_id).outerjoin(User, User.id == Message.user_id)


async def get(session: AsyncSession, message_id: uuid.UUID) -> tuple[Message, str | None] | None:
    row = (await session.execute(_with_owner().where(Message.id == message_id))).first()
    return (row[0], row[1]) if row else None


async def get_with_requester(
    session: AsyncSession, message_id: uuid.UUID
) -> tuple[Message, str | None, str | None] | None:
    """The message, its owner's external id, and the name of the API key that asked for it
    (revoked keys keep their name; None when a user asked)."""
    asked_by_key = Message.requested_by == literal("api_key:") + cast(ApiKey.id, String)
    statement = (
        select(Message, User.external_id, ApiKey.name)
        .outerjoin(User, User.id == Message.user_id)
        .outerjoin(ApiKey, asked_by_key)
        .where(Message.id == message_id)
    )
    row = (await session.execute(statement)).first()
    return (row[0], row[1], row[2]) if row else None


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


async def cancel_where(
    session: AsyncSession, condition: ColumnElement[bool], *, detail: str
) -> list[uuid.UUID]:
    """Cancels, with their events, the messages matching `condition` that Twilio cannot have."""
    statement = (
        update(Message)
        .where(condition, _NOT_AT_TWILIO)
        .values(status=Status.CANCELLED, final_at=func.now())
        .returning(Message.id, Message.category)
    )
    rows = (await session.execute(statement)).all()
    cancelled = [row[0] for row in rows]
    if cancelled:
        await add_events(session, cancelled, Status.CANCELLED, source="api", detail=detail)
        count_entered(session, Status.CANCELLED, [row[1] for row in rows])
    return cancelled


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


class NewEvent(NamedTuple):
    """One message's event, when each message of a batch has its own status or detail."""

    message_id: uuid.UUID
    status: Status
    source: str
    twilio_status: str | None = None
    error_code: int | None = None
    detail: str | None = None


async def add_event_rows(session: AsyncSession, events: Sequence[NewEvent]) -> None:
    """Events of many messages, each with its own values, in one INSERT (in the given order:
    ids follow it)."""
    if not events:
        return
    rows = select(
        func.unnest(
            cast([event.message_id for event in events], ARRAY(UUID)),
            cast([event.status.value for event in events], ARRAY(String)),
            cast([event.twilio_status for event in events], ARRAY(String)),
            cast([event.error_code for event in events], ARRAY(Integer)),
            cast([event.source for event in events], ARRAY(String)),
            cast([event.detail for event in events], ARRAY(String)),
        )
        .table_valued("message_id", "status", "twilio_status", "error_code", "source", "detail")
        .render_derived(name="event")
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


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What erasing a recipient did to their messages."""

    messages: int
    cancelled: list[uuid.UUID]
    notifications: int


async def forget_recipient(session: AsyncSession, user_id: uuid.UUID) -> Forgotten:
    """A user is erased: what was not yet handed to Twilio is cancelled; every message of
    theirs loses the user, the number, its index and the body (a message Twilio already has
    is still tracked by its SID), keeping what the counts need (category, status, segments,
    price, error code); the events they were rendered from lose their data."""
    cancelled = await cancel_where(session, Message.user_id == user_id, detail="user erased")
    statement = (
        update(Message)
        .where(Message.user_id == user_id)
        .values(user_id=None, to_encrypted=None, to_index=None, body=None)
        .returning(Message.notification_id)
    )
    notification_ids = list((await session.execute(statement)).scalars())
    rendered_from = {found for found in notification_ids if found is not None}
    if rendered_from:
        await session.execute(
            update(Notification).where(Notification.id.in_(sorted(rendered_from))).values(data={})
        )
    return Forgotten(len(notification_ids), cancelled, len(rendered_from))


async def forget_requester(session: AsyncSession, requested_by: str, replacement: str) -> None:
    """What a principal asked for no longer names it (an erased user's own requests)."""
    await session.execute(
        update(Message).where(Message.requested_by == requested_by).values(requested_by=replacement)
    )
    await session.execute(
        update(Notification)
        .where(Notification.requested_by == requested_by)
        .values(requested_by=replacement)
    )
