"""Moving a message's status forward from what Twilio reports, never backward."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import NamedTuple, cast

from sqlalchemy import (
    Boolean,
    Integer,
    Interval,
    String,
    Table,
    Text,
    Uuid,
    any_,
    bindparam,
    case,
    column,
    func,
    insert,
    literal,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from app.messages.models import Message, MessageEvent
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


# The callback batch's two statements, built once: compiled on first use, then only their
# parameters change. Core on the table, not the ORM: nothing is loaded into the session.
_messages = cast(Table, Message.__table__)


class Locked(NamedTuple):
    """A message a batch holds, as it is while the batch holds it."""

    id: uuid.UUID
    sid: str
    status: Status
    to_index: bytes | None
    category: str
    since_attempt: timedelta | None  # since the last attempt began, by the database's clock


_LOCK = (
    select(
        _messages.c.id,
        _messages.c.twilio_sid,
        _messages.c.status,
        _messages.c.to_index,
        _messages.c.category,
        type_coerce(func.clock_timestamp() - _messages.c.last_attempt_at, Interval),
    )
    .where(_messages.c.twilio_sid == any_(bindparam("sids", type_=ARRAY(String()))))
    .order_by(_messages.c.id)
    .with_for_update()
)


async def lock_messages_of(session: AsyncSession, sids: Sequence[str]) -> list[Locked]:
    """Locks the messages of these SIDs, in id order, for the rest of the transaction (batches
    in two API processes that share messages take turns instead of deadlocking), and returns
    them: nobody else changes them before the commit, so what to change is decided on these."""
    result = await session.execute(_LOCK, {"sids": list(sids)})
    return [Locked(row[0], row[1], Status(row[2]), row[3], row[4], row[5]) for row in result]


class Change(NamedTuple):
    """Where a locked message ends up: its status, and Twilio's, error and finality with it."""

    message_id: uuid.UUID
    status: Status
    twilio_status: str
    error_code: int | None  # None keeps the error recorded, as `advance` does
    error_message: str | None
    final: bool


class Step(NamedTuple):
    """One status a message went through on its way: its event."""

    message_id: uuid.UUID
    status: Status
    twilio_status: str
    error_code: int | None


_change = (
    func.unnest(
        bindparam("message_ids", type_=ARRAY(Uuid())),
        bindparam("statuses", type_=ARRAY(String())),
        bindparam("twilio_statuses", type_=ARRAY(String())),
        bindparam("error_codes", type_=ARRAY(Integer())),
        bindparam("error_messages", type_=ARRAY(Text())),
        bindparam("finals", type_=ARRAY(Boolean())),
    )
    .table_valued(
        column("message_id", Uuid()),
        column("status", String()),
        column("twilio_status", String()),
        column("error_code", Integer()),
        column("error_message", Text()),
        column("final", Boolean()),
    )
    .render_derived(name="change")
)
_step = (
    func.unnest(
        bindparam("step_message_ids", type_=ARRAY(Uuid())),
        bindparam("step_statuses", type_=ARRAY(String())),
        bindparam("step_twilio_statuses", type_=ARRAY(String())),
        bindparam("step_error_codes", type_=ARRAY(Integer())),
    )
    .table_valued(
        column("message_id", Uuid()),
        column("status", String()),
        column("twilio_status", String()),
        column("error_code", Integer()),
    )
    .render_derived(name="step")
)
_events = cast(Table, MessageEvent.__table__)
# The changes and their events in one statement (the update as a data-modifying WITH): one
# round trip, where each costs the batch more CPU than its rows.
_RECORD = (
    insert(_events)
    .from_select(
        ["message_id", "status", "twilio_status", "error_code", "source"],
        select(
            _step.c.message_id,
            _step.c.status,
            _step.c.twilio_status,
            _step.c.error_code,
            literal("callback", String()),
        ),
    )
    .add_cte(
        update(_messages)
        .where(_messages.c.id == _change.c.message_id)
        .values(
            status=_change.c.status,
            twilio_status=_change.c.twilio_status,
            error_code=func.coalesce(_change.c.error_code, _messages.c.error_code),
            error_message=case(
                (_change.c.error_code.is_(None), _messages.c.error_message),
                else_=_change.c.error_message,
            ),
            final_at=case((_change.c.final, func.now()), else_=_messages.c.final_at),
        )
        .cte("changed")
    )
)


async def record_changes(
    session: AsyncSession, changes: Sequence[Change], steps: Sequence[Step]
) -> None:
    """Messages locked by `lock_messages_of` moved to their changes, and the events of every
    step (in the given order: ids follow it), from callbacks."""
    if not changes:
        return
    await session.execute(
        _RECORD,
        {
            "message_ids": [change.message_id for change in changes],
            "statuses": [change.status.value for change in changes],
            "twilio_statuses": [change.twilio_status for change in changes],
            "error_codes": [change.error_code for change in changes],
            "error_messages": [change.error_message for change in changes],
            "finals": [change.final for change in changes],
            "step_message_ids": [step.message_id for step in steps],
            "step_statuses": [step.status.value for step in steps],
            "step_twilio_statuses": [step.twilio_status for step in steps],
            "step_error_codes": [step.error_code for step in steps],
        },
    )


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
