"""Moving a message's status forward from what Twilio reports, never backward."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import NamedTuple

from sqlalchemy import (
    Integer,
    Interval,
    String,
    Text,
    any_,
    case,
    cast,
    func,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.database import values_of
from app.messages.models import Message
from app.messages.status import FINAL, RANK, Status

POLL_FOR = timedelta(days=3)
PRICE_ASK_EVERY = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class Advanced:
    message_id: uuid.UUID
    to_index: bytes | None
    category: str
    since_attempt: timedelta | None  # since the last attempt began, by the database's clock


async def advance(
    session: AsyncSession,
    sid: str,
    status: Status,
    *,
    twilio_status: str,
    error_code: int | None,
    error_message: str | None,
) -> Advanced | None:
    """One conditional update: a duplicate or an older status matches no row and changes
    nothing, whatever order callbacks arrive in."""
    earlier = [s for s in Status if s not in FINAL and RANK[s] < RANK[status]]
    values: dict[str, object] = {"status": status, "twilio_status": twilio_status}
    if error_code is not None:
        values |= {"error_code": error_code, "error_message": error_message}
    if status in FINAL:
        values["final_at"] = func.now()
    statement = (
        update(Message)
        .where(Message.twilio_sid == sid, Message.status.in_(earlier))
        .values(**values)
        .returning(
            Message.id,
            Message.to_index,
            Message.category,
            type_coerce(func.clock_timestamp() - Message.last_attempt_at, Interval),
        )
    )
    row = (await session.execute(statement)).first()
    return Advanced(row[0], row[1], row[2], row[3]) if row else None


class Reported(NamedTuple):
    sid: str
    twilio_status: str
    error_code: int | None
    error_message: str | None


@dataclass(frozen=True, slots=True)
class AdvancedSid:
    sid: str
    advanced: Advanced
    error_code: int | None


async def lock_messages_of(session: AsyncSession, sids: Sequence[str]) -> set[str]:
    """Locks the messages of these SIDs, in id order, for the rest of the transaction (batches
    in two API processes that share messages take turns instead of deadlocking), and returns
    the SIDs found: those a message has, as of now, for every statement after this one."""
    statement = (
        select(Message.twilio_sid)
        .where(Message.twilio_sid == any_(cast(list(sids), ARRAY(String()))))
        .order_by(Message.id)
        .with_for_update()
    )
    return {sid for sid in (await session.execute(statement)).scalars() if sid}


async def advance_many(
    session: AsyncSession, status: Status, reports: Sequence[Reported]
) -> list[AdvancedSid]:
    """`advance` for many SIDs moving to one status, in one statement (one report per SID)."""
    if not reports:
        return []
    earlier = [s for s in Status if s not in FINAL and RANK[s] < RANK[status]]
    rows = values_of(
        "reported",
        sid=([report.sid for report in reports], String()),
        twilio_status=([report.twilio_status for report in reports], String()),
        error_code=([report.error_code for report in reports], Integer()),
        error_message=([report.error_message for report in reports], Text()),
    )
    values: dict[str, object] = {
        "status": status,
        "twilio_status": rows.c.twilio_status,
        # As `advance`: a report without an error code keeps the one recorded.
        "error_code": func.coalesce(rows.c.error_code, Message.error_code),
        "error_message": case(
            (rows.c.error_code.is_(None), Message.error_message), else_=rows.c.error_message
        ),
    }
    if status in FINAL:
        values["final_at"] = func.now()
    statement = (
        update(Message)
        .where(Message.twilio_sid == rows.c.sid, Message.status.in_(earlier))
        .values(**values)
        .returning(
            Message.twilio_sid,
            Message.id,
            Message.to_index,
            Message.category,
            type_coerce(func.clock_timestamp() - Message.last_attempt_at, Interval),
            rows.c.error_code,
        )
        .execution_options(synchronize_session=False)
    )
    return [
        AdvancedSid(row[0], Advanced(row[1], row[2], row[3], row[4]), row[5])
        for row in (await session.execute(statement)).all()
    ]


async def awaiting_status(
    session: AsyncSession, *, quiet_for: timedelta, limit: int
) -> list[tuple[uuid.UUID, str]]:
    """Messages Twilio took but has not reported final on, and not heard of for a while.
    Some carriers never report delivery: `sent` is as far as those get, so after a few days
    of asking they are left as they are."""
    statement = (
        select(Message.id, Message.twilio_sid)
        .where(
            Message.twilio_sid.is_not(None),
            Message.status.in_([Status.SENDING, Status.SENT]),
            Message.updated_at < func.now() - quiet_for,
            Message.created_at > func.now() - POLL_FOR,
        )
        .order_by(Message.updated_at)
        .limit(limit)
    )
    return [(row[0], row[1]) for row in (await session.execute(statement)).all() if row[1]]


async def awaiting_price(
    session: AsyncSession, *, settled_for: timedelta, limit: int
) -> list[tuple[uuid.UUID, str]]:
    statement = (
        select(Message.id, Message.twilio_sid)
        .where(
            Message.twilio_sid.is_not(None),
            Message.price_checked_at.is_(None),
            Message.final_at < func.now() - settled_for,
            # The first ask at once; one that found no price is repeated only now and then
            # (each ask bumps updated_at past final_at).
            or_(
                Message.updated_at <= Message.final_at + timedelta(seconds=1),
                Message.updated_at < func.now() - PRICE_ASK_EVERY,
            ),
            # Twilio prices within hours; past this, stop asking.
            Message.final_at > func.now() - POLL_FOR,
        )
        # Least recently looked at first (each look bumps updated_at): messages Twilio never
        # prices (many failed ones) must not hold the batch for three days.
        .order_by(Message.updated_at)
        .limit(limit)
    )
    return [(row[0], row[1]) for row in (await session.execute(statement)).all() if row[1]]


async def record_price(
    session: AsyncSession,
    message_id: uuid.UUID,
    *,
    price: Decimal | None,
    price_unit: str | None,
    segments: int | None,
    settled: bool,
) -> None:
    values: dict[str, object] = {"price": price, "price_unit": price_unit}
    if segments:
        values["segments"] = segments
    if settled:
        values["price_checked_at"] = func.now()
    await session.execute(update(Message).where(Message.id == message_id).values(**values))


async def touch(session: AsyncSession, message_id: uuid.UUID) -> None:
    """Asked without news (or without an answer): wait another round before asking again."""
    await session.execute(
        update(Message).where(Message.id == message_id).values(updated_at=func.now())
    )
