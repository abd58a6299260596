"""Retention's SQL. Each change is one set-based statement on a batch of at most `limit`
rows, picked oldest first by an index and locked with SKIP LOCKED: rows a worker is sending
(or another retention run holds) are passed over, never waited on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Date,
    Select,
    and_,
    cast,
    delete,
    distinct,
    exists,
    func,
    literal_column,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.analytics.models import MessageDailyStats
from app.messages.models import Message
from app.messages.status import FINAL
from app.notifications.models import Notification

# No longer ours to send: Twilio has it (`sent` is as far as some carriers ever report), or
# it is final. The others (scheduled, queued, sending without a SID) keep their body and
# their row: they still have to go out.
DONE: ColumnElement[bool] = or_(Message.twilio_sid.is_not(None), Message.status.in_(sorted(FINAL)))
# Literals, not bound values: the planner matches them to the partial indexes' predicates,
# and a grouped expression must read the same in SELECT and GROUP BY.
ERASED_DATA: ColumnElement[Any] = literal_column("'{}'::jsonb")
_UTC: ColumnElement[str] = literal_column("'UTC'")
_NO_ERROR: ColumnElement[int] = literal_column("0")
_NO_UNIT: ColumnElement[str] = literal_column("''")


def _utc_day(moment: ColumnElement[datetime] | InstrumentedAttribute[datetime]) -> Any:
    return cast(func.timezone(_UTC, moment), Date)


def _bodies_due(before: datetime) -> ColumnElement[bool]:
    # `body IS NOT NULL` is ix_messages_body_kept's predicate: the bodies erased already,
    # a year of them, are never read again.
    return and_(Message.body.is_not(None), Message.created_at < before, DONE)


def _messages_due(before: datetime) -> ColumnElement[bool]:
    return and_(Message.created_at < before, DONE)


def _data_due(before: datetime) -> ColumnElement[bool]:
    """A notification's data renders its bodies again: it goes when they go, once none of
    its messages is still to be sent."""
    still_to_send = (
        select(Message.id).where(Message.notification_id == Notification.id, not_(DONE)).exists()
    )
    return and_(Notification.data != ERASED_DATA, Notification.created_at < before, ~still_to_send)


def _unused_notifications(before: datetime) -> ColumnElement[bool]:
    return and_(
        Notification.created_at < before,
        ~exists().where(Message.notification_id == Notification.id),
    )


# The batches, oldest first, locked (ix_messages_body_kept, ix_messages_created,
# ix_notifications_data_kept, ix_notifications_created).


def bodies_batch(before: datetime, limit: int) -> Select[tuple[Any]]:
    return _batch(Message.id, Message.created_at, _bodies_due(before), limit)


def messages_batch(before: datetime, limit: int) -> Select[tuple[Any]]:
    return _batch(Message.id, Message.created_at, _messages_due(before), limit)


def notification_data_batch(before: datetime, limit: int) -> Select[tuple[Any]]:
    return _batch(Notification.id, Notification.created_at, _data_due(before), limit)


def notifications_batch(before: datetime, limit: int) -> Select[tuple[Any]]:
    return _batch(Notification.id, Notification.created_at, _unused_notifications(before), limit)


def _batch(
    key: InstrumentedAttribute[Any],
    age: InstrumentedAttribute[datetime],
    due: ColumnElement[bool],
    limit: int,
) -> Select[tuple[Any]]:
    return select(key).where(due).order_by(age).limit(limit).with_for_update(skip_locked=True)


async def erase_bodies(session: AsyncSession, *, before: datetime, limit: int) -> int:
    picked = bodies_batch(before, limit).cte("picked")
    statement = (
        update(Message)
        .where(Message.id.in_(select(picked.c.id)))
        .values(body=None)
        .returning(Message.id)
    )
    return len((await session.execute(statement)).all())


async def erase_notification_data(session: AsyncSession, *, before: datetime, limit: int) -> int:
    picked = notification_data_batch(before, limit).cte("picked")
    statement = (
        update(Notification)
        .where(Notification.id.in_(select(picked.c.id)))
        .values(data=ERASED_DATA)
        .returning(Notification.id)
    )
    return len((await session.execute(statement)).all())


@dataclass(frozen=True, slots=True)
class Deleted:
    messages: int
    days: frozenset[date]


_STATS_KEY = ("day", "category", "status", "error_code", "price_unit")
_STATS_COUNTS = ("messages", "segments", "price", "unpriced_segments")


async def delete_messages(session: AsyncSession, *, before: datetime, limit: int) -> Deleted:
    """Deletes a batch of old messages (their events go with them: ON DELETE CASCADE) and adds
    their counts to message_daily_stats in the same statement: the rows and their counts
    never exist apart, nor twice. The groups are upserted in key order, so two runs at once
    lock the stats rows they share in the same order and take turns instead of deadlocking."""
    picked = messages_batch(before, limit).cte("picked")
    gone = (
        delete(Message)
        .where(Message.id.in_(select(picked.c.id)))
        .returning(
            Message.created_at,
            Message.category,
            Message.status,
            Message.error_code,
            Message.price_unit,
            Message.segments,
            Message.price,
        )
        .cte("gone")
    )
    key = (
        _utc_day(gone.c.created_at),
        gone.c.category,
        gone.c.status,
        func.coalesce(gone.c.error_code, _NO_ERROR),
        func.coalesce(gone.c.price_unit, _NO_UNIT),
    )
    counts = (
        select(
            *key,
            func.count(),
            func.sum(gone.c.segments),
            # Twilio's prices where it gave one; the others' segments, for the estimate.
            func.coalesce(func.sum(gone.c.price), 0),
            func.coalesce(func.sum(gone.c.segments).filter(gone.c.price.is_(None)), 0),
        )
        .group_by(*key)
        .order_by(*key)
    )
    table = MessageDailyStats.__table__
    stats = insert(MessageDailyStats).from_select([*_STATS_KEY, *_STATS_COUNTS], counts)
    stats = stats.on_conflict_do_update(
        index_elements=[table.c[name] for name in _STATS_KEY],
        set_={name: table.c[name] + stats.excluded[name] for name in _STATS_COUNTS},
    )
    added = stats.returning(MessageDailyStats.day).cte("added")
    statement = select(
        select(func.count()).select_from(gone).scalar_subquery(),
        select(func.array_agg(distinct(added.c.day))).scalar_subquery(),
    )
    row = (await session.execute(statement)).one()
    return Deleted(messages=row[0], days=frozenset(row[1] or ()))


async def delete_notifications(session: AsyncSession, *, before: datetime, limit: int) -> int:
    """Old notifications none of whose messages is left (their data names people)."""
    picked = notifications_batch(before, limit).cte("picked")
    statement = (
        delete(Notification)
        .where(Notification.id.in_(select(picked.c.id)))
        .returning(Notification.id)
    )
    return len((await session.execute(statement)).all())


@dataclass(frozen=True, slots=True)
class Pending:
    """What a run would do now (a dry run's answer)."""

    bodies: int
    notification_data: int
    messages: int
    days: int
    notifications: int


async def pending(
    session: AsyncSession, *, bodies_before: datetime, messages_before: datetime
) -> Pending:
    """Counts only, in one snapshot. A notification counts as deletable when every message
    it has is deletable too."""
    kept_message = (
        select(Message.id)
        .where(Message.notification_id == Notification.id, not_(_messages_due(messages_before)))
        .exists()
    )
    statement = select(
        select(func.count()).where(_bodies_due(bodies_before)).scalar_subquery(),
        select(func.count())
        .select_from(Notification)
        .where(_data_due(bodies_before))
        .scalar_subquery(),
        select(func.count()).where(_messages_due(messages_before)).scalar_subquery(),
        select(func.count(distinct(_utc_day(Message.created_at))))
        .where(_messages_due(messages_before))
        .scalar_subquery(),
        select(func.count())
        .select_from(Notification)
        .where(Notification.created_at < messages_before, ~kept_message)
        .scalar_subquery(),
    )
    row = (await session.execute(statement)).one()
    return Pending(
        bodies=row[0], notification_data=row[1], messages=row[2], days=row[3], notifications=row[4]
    )
