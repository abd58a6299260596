"""Campaigns' SQL: the campaign row, its messages written with COPY, what a chunk sends, the
progress counts (kept by triggers on messages: migration 0010), and cancelling in batches."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import and_, delete, exists, func, or_, select, text, union_all, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.campaigns.models import Campaign, CampaignCount, CampaignState, campaign_count_deltas
from app.messages.metrics import count_entered
from app.messages.models import Message
from app.messages.repository import add_events, cancel_where
from app.messages.status import Status

CANCELLED_DETAIL = "campaign cancelled"
# fold_counts' advisory lock (any constant of ours: one fold at a time).
_FOLD_LOCK = 0x5A5F_C0DE


class MessageRow(NamedTuple):
    """A campaign message as COPY writes it (the columns not named take their defaults)."""

    id: uuid.UUID
    user_id: uuid.UUID | None
    to_encrypted: bytes | None
    to_index: bytes | None
    to_region: str | None
    body: str
    category: str
    status: str
    suppression_reason: str | None
    encoding: str
    segments: int
    reference: str | None
    requested_by: str
    send_at: datetime | None
    next_attempt_at: datetime
    expires_at: datetime
    final_at: datetime | None
    campaign_id: uuid.UUID
    campaign_chunk: int | None


class EventRow(NamedTuple):
    message_id: uuid.UUID
    status: str
    source: str
    detail: str | None


# Never claimed yet: a chunk job's to send. Retries and what a dead worker left are single
# messages again (the outbox's sweep takes them, app/outbox/repository.py).
_FRESH = Message.attempts == 0


async def add(session: AsyncSession, campaign: Campaign) -> Campaign:
    session.add(campaign)
    await session.flush()
    return campaign


async def copy_messages(
    session: AsyncSession, messages: Sequence[MessageRow], events: Sequence[EventRow]
) -> None:
    """Writes the rows with COPY on the session's own connection, in its transaction: a few
    times faster than a multi-row INSERT, and nothing is held in the ORM's identity map."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection  # asyncpg's connection
    await driver.copy_records_to_table(
        Message.__tablename__, records=messages, columns=list(MessageRow._fields)
    )
    await driver.copy_records_to_table(
        "message_events", records=events, columns=list(EventRow._fields)
    )


# Autovacuum's own analyze threshold (autovacuum_analyze_scale_factor): rows added that are
# this share of the table's last count change the planner's picture.
ANALYZE_SHARE = 0.1


async def analyze_if_grown(session: AsyncSession, added: int) -> bool:
    """ANALYZE messages, in this transaction (its own rows count), when `added` rows are a
    tenth of the table or more: the chunks' claims (`id = ANY(...)`) then use the primary key.
    Without statistics, as before autovacuum's next look (up to a minute; never where it is
    off), the planner took the partial index of due messages and read the whole campaign for
    each batch of 100: ~110 ms a claim at 100,000 rows against ~6 ms (migration-fresh
    database, ANALYZE ~0.35 s)."""
    counted = await session.scalar(
        text("SELECT reltuples FROM pg_class WHERE oid = 'messages'::regclass")
    )
    if counted is not None and counted >= 0 and added < ANALYZE_SHARE * counted:
        return False
    await session.execute(text("ANALYZE messages"))
    return True


async def get(
    session: AsyncSession, campaign_id: uuid.UUID, *, for_update: bool = False
) -> Campaign | None:
    statement = select(Campaign).where(Campaign.id == campaign_id)
    if for_update:  # transitions take turns on the row
        statement = statement.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(statement)).scalar_one_or_none()


async def set_state(
    session: AsyncSession, campaign_id: uuid.UUID, state: CampaignState, *, finished: bool = False
) -> None:
    values: dict[str, Any] = {"state": state}
    if finished:
        values["finished_at"] = func.now()
    await session.execute(update(Campaign).where(Campaign.id == campaign_id).values(**values))


async def complete_if_done(session: AsyncSession, campaign_id: uuid.UUID) -> bool:
    """An active campaign with nothing left to hand to Twilio is completed (one statement, so
    a pause or cancel committing meanwhile wins)."""
    statement = (
        update(Campaign)
        .where(
            Campaign.id == campaign_id,
            Campaign.state == CampaignState.ACTIVE,
            _pending_count(campaign_id) == 0,
        )
        .values(state=CampaignState.COMPLETED, finished_at=func.now())
        .returning(Campaign.id)
    )
    return (await session.execute(statement)).first() is not None


def _counted(campaign_id: uuid.UUID) -> Any:
    """The campaign's counts as (status, at_twilio, messages) rows: its totals and the deltas
    not folded into them yet, read in one statement (one snapshot: a fold is wholly before or
    after it)."""
    totals = select(CampaignCount.status, CampaignCount.at_twilio, CampaignCount.messages).where(
        CampaignCount.campaign_id == campaign_id
    )
    deltas = select(
        campaign_count_deltas.c.status,
        campaign_count_deltas.c.at_twilio,
        campaign_count_deltas.c.messages,
    ).where(campaign_count_deltas.c.campaign_id == campaign_id)
    return union_all(totals, deltas).subquery("counted")


async def counts(session: AsyncSession, campaign_id: uuid.UUID) -> dict[tuple[str, bool], int]:
    """(status, handed to Twilio) → messages, from the counts the triggers keep (migration
    0010): a few rows whatever the campaign's size."""
    counted = _counted(campaign_id)
    statement = (
        select(counted.c.status, counted.c.at_twilio, func.sum(counted.c.messages))
        .group_by(counted.c.status, counted.c.at_twilio)
        .having(func.sum(counted.c.messages) != 0)
    )
    return {(row[0], row[1]): int(row[2]) for row in (await session.execute(statement)).all()}


def _pending_count(campaign_id: uuid.UUID) -> Any:
    """How many of the campaign's messages are still to hand to Twilio: queued, scheduled, or
    sending without a SID (claimed, their create under way)."""
    counted = _counted(campaign_id)
    pending = or_(
        counted.c.status.in_([Status.QUEUED, Status.SCHEDULED]),
        and_(counted.c.status == Status.SENDING, counted.c.at_twilio.is_(False)),
    )
    return select(func.coalesce(func.sum(counted.c.messages), 0)).where(pending).scalar_subquery()


async def has_pending(session: AsyncSession, campaign_id: uuid.UUID) -> bool:
    return bool(await session.scalar(select(_pending_count(campaign_id) > 0)))


async def fold_counts(session: AsyncSession) -> int:
    """Moves every campaign's deltas into its totals, in one statement; returns the deltas
    folded. One fold at a time (a transaction-scoped advisory lock; another caller skips):
    two at once would wait on each other's rows."""
    if not await session.scalar(select(func.pg_try_advisory_xact_lock(_FOLD_LOCK))):
        return 0
    moved = (
        delete(campaign_count_deltas)
        .returning(
            campaign_count_deltas.c.campaign_id,
            campaign_count_deltas.c.status,
            campaign_count_deltas.c.at_twilio,
            campaign_count_deltas.c.messages,
        )
        .cte("moved")
    )
    summed = (
        select(
            moved.c.campaign_id,
            moved.c.status,
            moved.c.at_twilio,
            func.sum(moved.c.messages).label("messages"),
            func.count().label("deltas"),
        )
        .group_by(moved.c.campaign_id, moved.c.status, moved.c.at_twilio)
        .cte("summed")
    )
    upsert = pg_insert(CampaignCount).from_select(
        ["campaign_id", "status", "at_twilio", "messages"],
        select(summed.c.campaign_id, summed.c.status, summed.c.at_twilio, summed.c.messages)
        # A campaign deleted meanwhile has nothing left to count.
        .where(exists().where(Campaign.id == summed.c.campaign_id)),
    )
    upserted = upsert.on_conflict_do_update(
        index_elements=["campaign_id", "status", "at_twilio"],
        set_={"messages": CampaignCount.messages + upsert.excluded.messages},
    ).cte("upserted")
    # A data-modifying WITH runs whether or not the query reads it.
    statement = select(func.coalesce(func.sum(summed.c.deltas), 0)).add_cte(upserted)
    return int(await session.scalar(statement) or 0)


async def unfinished(session: AsyncSession) -> list[tuple[uuid.UUID, str]]:
    """Running campaigns, and cancelled ones whose messages are not all cancelled yet."""
    statement = select(Campaign.id, Campaign.state).where(
        Campaign.finished_at.is_(None),
        Campaign.state.in_([CampaignState.ACTIVE, CampaignState.CANCELLED]),
    )
    return [(row[0], row[1]) for row in (await session.execute(statement)).all()]


async def chunks_to_start(
    session: AsyncSession, campaign_id: uuid.UUID, *, now: datetime, limit: int
) -> list[int]:
    """The lowest chunks holding messages to send now: queued, or scheduled whose time came
    (by the caller's clock, as the outbox's sweep)."""
    queued = (
        select(Message.campaign_chunk)
        .distinct()
        .where(Message.campaign_id == campaign_id, Message.status == Status.QUEUED, _FRESH)
        .order_by(Message.campaign_chunk)
        .limit(limit)
    )
    due = (
        select(Message.campaign_chunk)
        .distinct()
        .where(
            Message.campaign_id == campaign_id,
            Message.status == Status.SCHEDULED,
            Message.send_at <= now,
        )
        .order_by(Message.campaign_chunk)
        .limit(limit)
    )
    found = set((await session.execute(queued)).scalars())
    found |= set((await session.execute(due)).scalars())
    return sorted(chunk for chunk in found if chunk is not None)[:limit]


async def release_chunk(
    session: AsyncSession, campaign_id: uuid.UUID, chunk: int, *, now: datetime
) -> int:
    """The chunk's scheduled messages whose time came become queued, with their events, in
    one statement each (the outbox's sweep would take them a thousand at a time)."""
    statement = (
        update(Message)
        .where(
            Message.campaign_id == campaign_id,
            Message.campaign_chunk == chunk,
            Message.status == Status.SCHEDULED,
            Message.send_at <= now,
        )
        .values(
            status=Status.QUEUED, next_attempt_at=func.least(Message.next_attempt_at, func.now())
        )
        .returning(Message.id, Message.category)
    )
    rows = (await session.execute(statement)).all()
    if rows:
        await add_events(session, [row[0] for row in rows], Status.QUEUED, source="worker")
        count_entered(session, Status.QUEUED, [row[1] for row in rows])
    return len(rows)


async def chunk_to_send(
    session: AsyncSession, campaign_id: uuid.UUID, chunk: int, *, limit: int
) -> list[uuid.UUID]:
    statement = (
        select(Message.id)
        .where(
            Message.campaign_id == campaign_id,
            Message.campaign_chunk == chunk,
            Message.status == Status.QUEUED,
            _FRESH,
            Message.next_attempt_at <= func.now(),
        )
        .order_by(Message.id)
        .limit(limit)
    )
    return list((await session.execute(statement)).scalars())


async def cancel_batch(session: AsyncSession, campaign_id: uuid.UUID, *, limit: int) -> int:
    """Cancels up to `limit` of the campaign's scheduled and queued messages, with their
    events, in one UPDATE. Rows another canceller (the API, a worker's sweep) holds are
    skipped, not waited for: two of them on one campaign took rows in different orders and
    deadlocked."""
    batch = (
        select(Message.id)
        .where(
            Message.campaign_id == campaign_id,
            Message.status.in_([Status.SCHEDULED, Status.QUEUED]),
        )
        .order_by(Message.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return len(await cancel_where(session, Message.id.in_(batch), detail=CANCELLED_DETAIL))


async def cancel_retries(session: AsyncSession, campaign_id: uuid.UUID) -> int:
    """The campaign's messages waiting for a retry after an attempt Twilio certainly refused
    (few): cancel_where leaves those Twilio may have."""
    condition = and_(Message.campaign_id == campaign_id, Message.status == Status.SENDING)
    return len(await cancel_where(session, condition, detail=CANCELLED_DETAIL))
