"""The outbox's SQL: atomic claims, outcomes, and what the sweeper finds due."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    Boolean,
    ColumnElement,
    DateTime,
    Integer,
    String,
    Text,
    and_,
    any_,
    case,
    cast,
    exists,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.ext.asyncio import AsyncSession

from app.campaigns.models import HALTED, Campaign
from app.core.database import values_of
from app.messages.categories import Category
from app.messages.metrics import count_entered
from app.messages.models import Message
from app.messages.repository import add_events
from app.messages.status import FINAL, Status

_CLAIMABLE = and_(
    Message.status.in_([Status.QUEUED, Status.SENDING]),
    Message.twilio_sid.is_(None),
    or_(Message.lease_until.is_(None), Message.lease_until < func.now()),
    # A paused or cancelled campaign's messages wait (or are cancelled): from the moment the
    # pause commits, no worker claims one (a message without a campaign matches no row).
    ~exists().where(Campaign.id == Message.campaign_id, Campaign.state.in_(HALTED)),
)
# A campaign's messages go out through its chunk jobs (app/campaigns), which its own sweep
# queues again if Redis lost them; the outbox's sweep takes only their retries and the ones a
# dead worker left, which are single messages again.
_SENT_ONE_BY_ONE = or_(Message.campaign_id.is_(None), Message.attempts > 0)


def _claim_values(lease: timedelta) -> dict[str, Any]:
    """What a claim writes: sending, one more attempt, held for `lease`. SET reads the old
    row: a lease still set is a dead worker's unknown attempt, to be looked up at Twilio."""
    return {
        "status": Status.SENDING,
        "attempts": Message.attempts + 1,
        "last_attempt_at": func.now(),
        "lease_until": func.now() + lease,
        "needs_reconciliation": Message.needs_reconciliation | Message.lease_until.is_not(None),
        "ambiguous_since": case(
            (
                Message.lease_until.is_not(None),
                func.coalesce(Message.ambiguous_since, Message.last_attempt_at),
            ),
            else_=Message.ambiguous_since,
        ),
    }


async def claim(session: AsyncSession, message_id: uuid.UUID, lease: timedelta) -> Message | None:
    """queued (or waiting for a retry) -> sending, held for `lease`, in one statement: of two
    workers only one gets the row. A lease that ran out means a worker died mid-attempt: the
    attempt may have reached Twilio, so the message is looked up there before any resend."""
    statement = (
        update(Message)
        .where(Message.id == message_id, _CLAIMABLE, Message.next_attempt_at <= func.now())
        .values(**_claim_values(lease))
        .returning(Message)
        .execution_options(populate_existing=True)
    )
    return (await session.execute(statement)).scalar_one_or_none()


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message as a batch claim returns it: the columns an attempt reads, no ORM object."""

    id: uuid.UUID
    user_id: uuid.UUID | None
    to_encrypted: bytes | None
    to_index: bytes | None
    body: str | None
    category: str
    segments: int
    attempts: int
    needs_reconciliation: bool
    ambiguous_since: datetime | None
    last_attempt_at: datetime | None
    created_at: datetime
    send_at: datetime | None
    next_attempt_at: datetime
    expires_at: datetime


_CLAIMED_COLUMNS = tuple(getattr(Message, name) for name in Claimed.__dataclass_fields__)
# What a batch claims: messages whose attempt is an ordinary create. One a dead worker left
# (its lease still set), one an ambiguous attempt left to reconcile, and one-time codes (made
# as they leave) go through the outbox's single path (Outbox.send), which knows them.
_PLAIN = and_(
    Message.lease_until.is_(None),
    Message.needs_reconciliation.is_(False),
    Message.category != Category.ONE_TIME_CODE,
)


def _any_of(ids: Sequence[uuid.UUID]) -> ColumnElement[bool]:
    return Message.id == any_(cast(list(ids), ARRAY(PG_UUID)))


async def claim_batch(
    session: AsyncSession, message_ids: Sequence[uuid.UUID], lease: timedelta
) -> list[Claimed]:
    """`claim` for many messages in one statement, with the same conditions and values, for
    those of them that are plain (see `_PLAIN`). Rows another transaction holds locked (a
    claim or a cancel under way) are skipped rather than waited for: that transaction
    decides them, and no two batch claims deadlock."""
    if not message_ids:
        return []
    claimable = and_(
        _any_of(message_ids), _CLAIMABLE, _PLAIN, Message.next_attempt_at <= func.now()
    )
    free = (
        select(Message.id)
        .where(claimable)
        .order_by(Message.id)
        .with_for_update(skip_locked=True, of=Message)
    )
    statement = (
        update(Message)
        .where(Message.id.in_(free.scalar_subquery()), claimable)
        .values(**_claim_values(lease))
        .returning(*_CLAIMED_COLUMNS)
        .execution_options(synchronize_session=False)
    )
    return [Claimed(*row) for row in (await session.execute(statement)).all()]


async def for_single_path(
    session: AsyncSession, message_ids: Sequence[uuid.UUID]
) -> list[uuid.UUID]:
    """Of messages a batch claim left, those the single path may claim (not plain)."""
    if not message_ids:
        return []
    statement = select(Message.id).where(
        _any_of(message_ids), _CLAIMABLE, ~_PLAIN, Message.next_attempt_at <= func.now()
    )
    return list((await session.execute(statement)).scalars())


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


async def hold(
    session: AsyncSession,
    message_id: uuid.UUID,
    attempt: int,
    *,
    until: datetime,
    expires_at: datetime,
) -> bool:
    """Back to `scheduled` until `until`, as if this attempt had not begun (quiet hours)."""
    result = await session.execute(
        update(Message)
        .where(_held(message_id, attempt))
        .values(
            status=Status.SCHEDULED,
            send_at=until,
            next_attempt_at=until,
            expires_at=expires_at,
            attempts=Message.attempts - 1,
            lease_until=None,
        )
        .returning(Message.id)
    )
    return result.first() is not None


def _held_each(rows: Any) -> ColumnElement[bool]:
    """`_held` for each (id, attempt) of `rows`."""
    return and_(
        Message.id == rows.c.id,
        Message.attempts == rows.c.attempt,
        Message.lease_until.is_not(None),
    )


class Accepted(NamedTuple):
    id: uuid.UUID
    attempt: int
    sid: str
    twilio_status: str
    status: Status
    sender: str | None
    error_code: int | None
    error_message: str | None


async def record_accepted_batch(
    session: AsyncSession, accepted: Sequence[Accepted]
) -> set[uuid.UUID]:
    """`record_accepted` for many messages in one statement, with the same guard; the ids
    recorded (one whose claim was lost is not)."""
    if not accepted:
        return set()
    rows = values_of(
        "accepted",
        id=([row.id for row in accepted], PG_UUID()),
        attempt=([row.attempt for row in accepted], Integer()),
        sid=([row.sid for row in accepted], String()),
        twilio_status=([row.twilio_status for row in accepted], String()),
        status=([row.status.value for row in accepted], String()),
        sender=([row.sender for row in accepted], String()),
        error_code=([row.error_code for row in accepted], Integer()),
        error_message=([row.error_message for row in accepted], Text()),
        final=([row.status in FINAL for row in accepted], Boolean()),
    )
    statement = (
        update(Message)
        .where(_held_each(rows), Message.twilio_sid.is_(None))
        .values(
            twilio_sid=rows.c.sid,
            twilio_status=rows.c.twilio_status,
            status=rows.c.status,
            sender=rows.c.sender,
            lease_until=None,
            needs_reconciliation=False,
            ambiguous_since=None,
            error_code=rows.c.error_code,
            error_message=rows.c.error_message,
            final_at=case((rows.c.final, func.now()), else_=None),
        )
        .returning(Message.id)
        .execution_options(synchronize_session=False)
    )
    return set((await session.execute(statement)).scalars())


class Finished(NamedTuple):
    id: uuid.UUID
    attempt: int
    status: Status
    error_code: int | None = None
    error_message: str | None = None
    suppression_reason: str | None = None


async def finish_batch(session: AsyncSession, finished: Sequence[Finished]) -> set[uuid.UUID]:
    """`finish` for many messages (each its own final status) in one statement; the ids
    finished (one whose claim was lost is not)."""
    if not finished:
        return set()
    rows = values_of(
        "finished",
        id=([row.id for row in finished], PG_UUID()),
        attempt=([row.attempt for row in finished], Integer()),
        status=([row.status.value for row in finished], String()),
        error_code=([row.error_code for row in finished], Integer()),
        error_message=([row.error_message for row in finished], Text()),
        suppression_reason=([row.suppression_reason for row in finished], String()),
    )
    statement = (
        update(Message)
        .where(_held_each(rows))
        .values(
            status=rows.c.status,
            error_code=rows.c.error_code,
            error_message=rows.c.error_message,
            suppression_reason=rows.c.suppression_reason,
            lease_until=None,
            final_at=func.now(),
        )
        .returning(Message.id)
        .execution_options(synchronize_session=False)
    )
    return set((await session.execute(statement)).scalars())


class Held(NamedTuple):
    id: uuid.UUID
    attempt: int
    until: datetime
    expires_at: datetime


async def hold_batch(session: AsyncSession, held: Sequence[Held]) -> set[uuid.UUID]:
    """`hold` for many messages in one statement; the ids held."""
    if not held:
        return set()
    rows = values_of(
        "held",
        id=([row.id for row in held], PG_UUID()),
        attempt=([row.attempt for row in held], Integer()),
        until=([row.until for row in held], DateTime(timezone=True)),
        expires_at=([row.expires_at for row in held], DateTime(timezone=True)),
    )
    statement = (
        update(Message)
        .where(_held_each(rows))
        .values(
            status=Status.SCHEDULED,
            send_at=rows.c.until,
            next_attempt_at=rows.c.until,
            expires_at=rows.c.expires_at,
            attempts=Message.attempts - 1,
            lease_until=None,
        )
        .returning(Message.id)
        .execution_options(synchronize_session=False)
    )
    return set((await session.execute(statement)).scalars())


async def give_back(
    session: AsyncSession, claims: Sequence[tuple[uuid.UUID, int]]
) -> list[tuple[uuid.UUID, str]]:
    """Claims a batch did not get to use (its campaign paused or cancelled, its time ran out)
    are undone, as if never made: the attempt is taken back and the message is free again;
    one on its first attempt is queued again. Returns (id, category) of those queued again."""
    if not claims:
        return []
    rows = values_of(
        "given",
        id=([claim[0] for claim in claims], PG_UUID()),
        attempt=([claim[1] for claim in claims], Integer()),
    )
    statement = (
        update(Message)
        .where(_held_each(rows), Message.twilio_sid.is_(None))
        .values(
            # SET reads the old row: a first attempt was queued before its claim.
            status=case((Message.attempts == 1, Status.QUEUED), else_=Message.status),
            attempts=Message.attempts - 1,
            lease_until=None,
        )
        .returning(Message.id, Message.category, Message.status)
        .execution_options(synchronize_session=False)
    )
    rows_back = (await session.execute(statement)).all()
    return [(row[0], row[1]) for row in rows_back if row[2] == Status.QUEUED]


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
        .where(_CLAIMABLE, _SENT_ONE_BY_ONE, Message.next_attempt_at <= func.now())
        .order_by(Message.next_attempt_at, Message.id)
        .limit(limit)
    )
    if after is not None:
        statement = statement.where(tuple_(Message.next_attempt_at, Message.id) > after)
    return [Due(row[0], row[1], row[2]) for row in (await session.execute(statement)).all()]


async def release_one(session: AsyncSession, message_id: uuid.UUID, *, now: datetime) -> bool:
    """The scheduled message becomes queued if its time has come (a deferred job's start)."""
    return bool(await release_due(session, [message_id], now=now))


async def release_due(
    session: AsyncSession, message_ids: Sequence[uuid.UUID], *, now: datetime
) -> list[uuid.UUID]:
    """Of these scheduled messages, those whose time has come become queued (deferred jobs
    starting together), with their events."""
    if not message_ids:
        return []
    statement = (
        update(Message)
        .where(_any_of(message_ids), Message.status == Status.SCHEDULED, Message.send_at <= now)
        .values(
            status=Status.QUEUED,
            next_attempt_at=func.least(Message.next_attempt_at, func.now()),
        )
        .returning(Message.id, Message.category)
        .execution_options(synchronize_session=False)
    )
    return await _release(session, statement, source="worker")


async def release_scheduled(session: AsyncSession, *, now: datetime, limit: int) -> list[uuid.UUID]:
    """Scheduled messages whose time has come (by the caller's clock) become queued, with
    their event, set-based. Released messages are due at once by the database's clock too."""
    ready = (
        select(Message.id)
        .where(Message.status == Status.SCHEDULED, Message.send_at <= now)
        .order_by(Message.send_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    statement = (
        update(Message)
        .where(Message.id.in_(ready.scalar_subquery()))
        .values(
            status=Status.QUEUED, next_attempt_at=func.least(Message.next_attempt_at, func.now())
        )
        .returning(Message.id, Message.category)
    )
    return await _release(session, statement, source="sweeper")


async def _release(session: AsyncSession, statement: Any, *, source: str) -> list[uuid.UUID]:
    """Runs a release (returning id, category) and records what it released."""
    rows = (await session.execute(statement)).all()
    released = [row[0] for row in rows]
    if released:
        await add_events(session, released, Status.QUEUED, source=source)
        count_entered(session, Status.QUEUED, [row[1] for row in rows])
    return released
