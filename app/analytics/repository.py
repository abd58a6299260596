"""The analytics query: messages still stored plus retention's daily aggregates, grouped in
PostgreSQL into a few hundred or thousand rows whatever the number of messages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Date,
    DateTime,
    Integer,
    String,
    case,
    cast,
    func,
    literal,
    null,
    select,
    text,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from app.analytics.models import MessageDailyStats
from app.messages.models import Message


@dataclass(frozen=True, slots=True)
class Window:
    """What to count. Stored messages count when created in [start, end); each is put in the
    local day whose midnight (`day_starts`, UTC instants from `first_day` on) precedes it.
    Aggregated days count from `aggregated_from` to `aggregated_to`, both included (the UTC
    days whose midnight is in [start, end)); None when there is no such day."""

    start: datetime
    end: datetime
    category: str | None
    first_day: date
    day_starts: Sequence[datetime]
    aggregated_from: date | None
    aggregated_to: date | None


@dataclass(frozen=True, slots=True)
class Group:
    """Messages with the same status, error code and price currency: per category (`day`
    None) or per day (`category` None, `error_code` 0). The same key can come twice (stored
    messages and aggregates): add them up."""

    category: str | None
    day: date | None
    status: str
    error_code: int  # 0: none
    price_unit: str  # "": no price; as Twilio spelled it
    messages: int
    segments: int
    price: Decimal  # Twilio's prices summed: negative for charges
    unpriced_segments: int


# Messages' columns in the shape of message_daily_stats: "" for "no price", 0 for "no error".
# (Twilio may name the unit before it knows the price: a unit without a price is no price.)
_PRICE_UNIT = case(
    (Message.price.is_(None), literal("", String)),
    else_=func.coalesce(Message.price_unit, ""),
)
_ERROR_CODE = func.coalesce(Message.error_code, 0)


def _message_sums() -> list[ColumnElement[Any]]:
    return [
        func.count().label("messages"),
        func.sum(Message.segments).label("segments"),
        func.coalesce(func.sum(Message.price), 0).label("price"),
        func.coalesce(func.sum(Message.segments).filter(Message.price.is_(None)), 0).label(
            "unpriced_segments"
        ),
    ]


def _stats_sums() -> list[ColumnElement[Any]]:
    # sum(bigint) is numeric in PostgreSQL: back to integers.
    return [
        cast(func.sum(MessageDailyStats.messages), BigInteger).label("messages"),
        cast(func.sum(MessageDailyStats.segments), BigInteger).label("segments"),
        func.sum(MessageDailyStats.price).label("price"),
        cast(func.sum(MessageDailyStats.unpriced_segments), BigInteger).label("unpriced_segments"),
    ]


async def groups(session: AsyncSession, window: Window) -> list[Group]:
    """Every figure analytics needs, in one statement: one snapshot, so a retention run that
    aggregates and deletes rows meanwhile is seen wholly before or wholly after it.

    Four grouped parts: stored messages and aggregates, each per category and per day. A key
    can come back from both sources; the caller adds them up. Stored messages are read
    through `ix_messages_analytics` (created_at, with every column used here included): an
    index-only scan of the period, no table access."""
    kept = [Message.created_at >= window.start, Message.created_at < window.end]
    if window.category is not None:
        kept.append(Message.category == window.category)
    aggregated: list[ColumnElement[bool]] = []
    if window.aggregated_from is None or window.aggregated_to is None:
        aggregated.append(literal(False))
    else:
        aggregated += [
            MessageDailyStats.day >= window.aggregated_from,
            MessageDailyStats.day <= window.aggregated_to,
        ]
    if window.category is not None:
        aggregated.append(MessageDailyStats.category == window.category)

    # The local day: the last local midnight at or before created_at, by a binary search
    # among the period's midnights (cheaper per row than AT TIME ZONE, measured; and the
    # calendar is Python's, the one the answer's days come from).
    midnights = literal(list(window.day_starts), ARRAY(DateTime(timezone=True)))
    local_day = cast(
        literal(window.first_day, Date) + (func.width_bucket(Message.created_at, midnights) - 1),
        Date,
    )
    no_day = cast(null(), Date).label("day")
    no_category = cast(null(), String).label("category")
    no_error = literal(0, Integer).label("error_code")
    stats = MessageDailyStats
    statement = union_all(
        select(Message.category, no_day, Message.status, _ERROR_CODE, _PRICE_UNIT, *_message_sums())
        .where(*kept)
        .group_by(Message.category, Message.status, _ERROR_CODE, _PRICE_UNIT),
        select(stats.category, no_day, stats.status, stats.error_code, stats.price_unit)
        .add_columns(*_stats_sums())
        .where(*aggregated)
        .group_by(stats.category, stats.status, stats.error_code, stats.price_unit),
        select(no_category, local_day, Message.status, no_error, _PRICE_UNIT, *_message_sums())
        .where(*kept)
        .group_by(local_day, Message.status, _PRICE_UNIT),
        # Aggregates only know the UTC day: shown under it.
        select(no_category, stats.day, stats.status, no_error, stats.price_unit)
        .add_columns(*_stats_sums())
        .where(*aggregated)
        .group_by(stats.day, stats.status, stats.price_unit),
    )
    # JIT saves nothing here and costs 40 ms at a million rows, 0.5 s once the estimate
    # passes jit_optimize_above_cost (measured): off for this transaction.
    await session.execute(text("SET LOCAL jit = off"))
    result = await session.execute(statement)
    return [
        Group(
            category=category,
            day=day,
            status=status,
            error_code=error_code,
            price_unit=price_unit,
            messages=messages,
            segments=segments,
            price=price,
            unpriced_segments=unpriced_segments,
        )
        for (
            category,
            day,
            status,
            error_code,
            price_unit,
            messages,
            segments,
            price,
            unpriced_segments,
        ) in result
    ]
