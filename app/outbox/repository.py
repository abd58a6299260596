"""The outbox's SQL: atomic claims, outcomes, and what the sweeper finds due."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, case, func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.messages.models import Message
from app.messages.repository import add_events
from app.messages.status import FINAL, Status

_CLAIMABLE = and_(
    Message.status.in_([Status.QUEUED, Status.SENDING]),
    Message.twilio_sid.is_(None),
    or_(Message.lease_until.is_(None), Message.lease_until < func.now()),
)


async def claim(session: AsyncSession, message_id: uuid.UUID, lease: timedelta) -> Message | None:
    """queued (or waiting for a retry) -> sending, held for `lease`, in one statement: of two
    workers only one gets the row. A lease that ran out means a worker died mid-attempt: the
    attempt may have reached Twilio, so the message is looked up there before any resend."""
    statement = (
        update(Message)
        .where(Message.id == message_id, _CLAIMABLE, Message.next_attempt_at <= func.now())
        .values(
            status=Status.SENDING,
            attempts=Message.attempts + 1,
            last_attempt_at=func.now(),
            lease_until=func.now() + lease,
            # SET reads the old row: a lease still set is a dead worker's unknown attempt.
            needs_reconciliation=Message.needs_reconciliation | Message.lease_until.is_not(None),
            ambiguous_since=case(
                (
                    Message.lease_until.is_not(None),
                    func.coalesce(Message.ambiguous_since, Message.last_attempt_at),
                ),
                else_=Message.ambiguous_since,
            ),
        )
        .returning(Message)
        .execution_options(populate_existing=True)
    )
    return (await session.execute(statement)).scalar_one_or_none()


def _held(message_id: uuid.UUID, attempt: int) -> ColumnElement[bool]:
    """The row as this attempt's claim left it: an outcome of an attempt whose lease ran out
    (a worker stalled, another claimed the message) must not overwrite the newer attempt's."""
    return and_(
        Message.id == message_id, Message.attempts == attempt, Message.lease_until.is_not(None)
    )


async def record_accepted(
    session: AsyncSession,
    message_id: uuid.UUID,
    attempt: int,
    *,
    sid: str,
    twilio_status: str,
    status: Status,
    sender: str | None,
    error_code: int | None = None,
    error_message: str | None = None,
) -> bool:
    """Twilio has the message. One adopted late may already be final there: then it is final
    here too (so its price is fetched and the poller leaves it), with Twilio's error.
    False when the claim was lost: the newer attempt finds Twilio's copy by reconciling."""
    result = await session.execute(
        update(Message)
        .where(_held(message_id, attempt), Message.twilio_sid.is_(None))
        .values(
            twilio_sid=sid,
            twilio_status=twilio_status,
            status=status,
            sender=sender,
            lease_until=None,
            needs_reconciliation=False,
            ambiguous_since=None,
            error_code=error_code,
            error_message=error_message,
            final_at=func.now() if status in FINAL else None,
        )
        .returning(Message.id)
    )
    return result.first() is not None


async def schedule_retry(
    session: AsyncSession,
    message_id: uuid.UUID,
    attempt: int,
    *,
    at: datetime,
    reconcile: bool,
    error_code: int | None,
    error_message: str | None,
) -> bool:
    values: dict[str, object] = {
        "next_attempt_at": at,
        "lease_until": None,
        "needs_reconciliation": reconcile,
        "error_code": error_code,
        "error_message": error_message,
    }
    if reconcile:
        values["ambiguous_since"] = func.coalesce(Message.ambiguous_since, Message.last_attempt_at)
    result = await session.execute(
        update(Message).where(_held(message_id, attempt)).values(**values).returning(Message.id)
    )
    return result.first() is not None


async def finish(
    session: AsyncSession,
    message_id: uuid.UUID,
    attempt: int,
    *,
    status: Status,
    error_code: int | None = None,
    error_message: str | None = None,
    suppression_reason: str | None = None,
) -> bool:
    result = await session.execute(
        update(Message)
        .where(_held(message_id, attempt))
        .values(
            status=status,
            error_code=error_code,
            error_message=error_message,
            suppression_reason=suppression_reason,
            lease_until=None,
            final_at=func.now(),
        )
        .returning(Message.id)
    )
    return result.first() is not None


async def known_sids(session: AsyncSession, sids: Sequence[str]) -> set[str]:
    statement = select(Message.twilio_sid).where(Message.twilio_sid.in_(sids))
    return {sid for sid in (await session.execute(statement)).scalars() if sid}


DueCursor = tuple[datetime, uuid.UUID]


@dataclass(frozen=True, slots=True)
class Due:
    next_attempt_at: datetime
    id: uuid.UUID
    category: str

    @property
    def cursor(self) -> DueCursor:
        return self.next_attempt_at, self.id


async def due(session: AsyncSession, *, limit: int, after: DueCursor | None = None) -> list[Due]:
    """Messages that should be on the queue now: new, retrying, or left by a dead worker, in
    (next_attempt_at, id) order. Enqueuing changes no row, so the next batch starts `after`
    the last one seen, or the same batch would come back forever."""
    statement = (
        select(Message.next_attempt_at, Message.id, Message.category)
        .where(_CLAIMABLE, Message.next_attempt_at <= func.now())
        .order_by(Message.next_attempt_at, Message.id)
        .limit(limit)
    )
    if after is not None:
        statement = statement.where(tuple_(Message.next_attempt_at, Message.id) > after)
    return [Due(row[0], row[1], row[2]) for row in (await session.execute(statement)).all()]


async def release_scheduled(session: AsyncSession, *, limit: int) -> list[uuid.UUID]:
    """Scheduled messages whose time has come become queued (with their event), set-based."""
    ready = (
        select(Message.id)
        .where(Message.status == Status.SCHEDULED, Message.send_at <= func.now())
        .order_by(Message.send_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    statement = (
        update(Message)
        .where(Message.id.in_(ready.scalar_subquery()))
        .values(status=Status.QUEUED)
        .returning(Message.id)
    )
    released = list((await session.execute(statement)).scalars())
    if released:
        await add_events(session, released, Status.QUEUED, source="sweeper")
    return released
