"""A campaign's counts, kept by triggers on `messages` (migration 0010) and folded by the
campaign sweep, are at every moment what a GROUP BY over its messages says: whatever writes
the messages (COPY, claims, callbacks, cancels, deletes, a message moved between campaigns),
before and after a fold, and with two folds at once. Real PostgreSQL."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.campaigns import repository
from app.campaigns.chunks import CampaignSender
from app.campaigns.models import Campaign, campaign_count_deltas
from app.core.database import create_sessionmaker, transaction
from app.core.redis import create_redis
from app.core.settings import Settings
from app.messages.models import Message
from app.messages.status import STATUSES
from app.outbox.service import Outbox
from tests.test_migrations import fresh_database  # noqa: F401 (a fixture)

Counts = dict[tuple[str, bool], int]


async def new_campaign(session: AsyncSession) -> uuid.UUID:
    campaign_id = uuid.uuid4()
    session.add(
        Campaign(
            id=campaign_id,
            state="active",
            requested_by="api_key:counts-test",
            messages=0,
            chunks=0,
            estimate={},
        )
    )
    await session.flush()
    return campaign_id


async def add_messages(
    session: AsyncSession, campaign_id: uuid.UUID | None, count: int, status: str = "queued"
) -> None:
    """`count` messages in one INSERT (a statement of many rows, as COPY writes them)."""
    await session.execute(
        text(
            "INSERT INTO messages (id, category, status, encoding, segments, requested_by, "
            "expires_at, campaign_id, campaign_chunk) "
            "SELECT gen_random_uuid(), 'marketing', :status, 'GSM-7', 1, 'api_key:counts-test', "
            "now() + interval '1 day', :campaign_id, n / 10 FROM generate_series(1, :count) n"
        ),
        {"status": status, "campaign_id": campaign_id, "count": count},
    )


async def grouped(session: AsyncSession, campaign_id: uuid.UUID) -> Counts:
    """What the counts must be: the campaign's messages, grouped."""
    at_twilio = Message.twilio_sid.is_not(None)
    rows = await session.execute(
        select(Message.status, at_twilio, func.count())
        .where(Message.campaign_id == campaign_id)
        .group_by(Message.status, at_twilio)
    )
    return {(row[0], bool(row[1])): row[2] for row in rows}


async def test_counts_follow_every_kind_of_write_and_survive_folds(session: AsyncSession) -> None:
    """A few hundred random statements on two campaigns' messages and others (many rows and
    one row at a time): after each, both campaigns' counts equal the GROUP BY."""
    campaigns = [await new_campaign(session), await new_campaign(session)]
    for campaign_id in campaigns:
        await add_messages(session, campaign_id, 60)
    await add_messages(session, None, 20)  # messages of no campaign change no count
    chance = random.Random(6)

    async def some_ids() -> list[uuid.UUID]:
        owner = chance.choice([*campaigns, None])
        condition = Message.campaign_id.is_(None) if owner is None else Message.campaign_id == owner
        ids = list((await session.execute(select(Message.id).where(condition))).scalars())
        return chance.sample(ids, min(len(ids), chance.choice([1, 1, 3, 10, 40])))

    for step in range(300):
        kind = chance.choice(["status", "status", "sid", "move", "delete", "insert", "fold"])
        ids = await some_ids()
        if kind == "status":
            await session.execute(
                text("UPDATE messages SET status = :status WHERE id = ANY(:ids)"),
                {"status": chance.choice(STATUSES), "ids": ids},
            )
        elif kind == "sid":  # handed to Twilio, or (a test's liberty) taken back
            handed_over = chance.random() < 0.8
            await session.execute(
                text(
                    "UPDATE messages SET twilio_sid = CASE WHEN :handed_over "
                    "THEN 'SM' || md5(id::text) END WHERE id = ANY(:ids)"
                ),
                {"handed_over": handed_over, "ids": ids},
            )
        elif kind == "move":
            await session.execute(
                text("UPDATE messages SET campaign_id = :to WHERE id = ANY(:ids)"),
                {"to": chance.choice([*campaigns, None]), "ids": ids},
            )
        elif kind == "delete":
            await session.execute(delete(Message).where(Message.id.in_(ids)))
        elif kind == "insert":
            await add_messages(
                session, chance.choice([*campaigns, None]), chance.randint(1, 30), "scheduled"
            )
        else:
            await repository.fold_counts(session)
        for campaign_id in campaigns:
            assert await repository.counts(session, campaign_id) == await grouped(
                session, campaign_id
            ), f"step {step}: {kind}"


async def test_a_fold_moves_the_deltas_into_the_totals(session: AsyncSession) -> None:
    campaign_id = await new_campaign(session)
    await add_messages(session, campaign_id, 30)
    await session.execute(
        text(
            "UPDATE messages SET status = 'sending', twilio_sid = 'SM' || md5(id::text) "
            "WHERE campaign_id = :id AND campaign_chunk = 1"
        ),
        {"id": campaign_id},
    )
    deltas = select(func.count()).where(campaign_count_deltas.c.campaign_id == campaign_id)
    assert await session.scalar(deltas) == 3  # the insert's; the update's -10 and +10

    folded = await repository.fold_counts(session)

    assert folded >= 3
    assert await session.scalar(deltas) == 0
    assert await repository.counts(session, campaign_id) == {
        ("queued", False): 20,
        ("sending", True): 10,
    }
    assert await repository.has_pending(session, campaign_id)


async def test_the_campaign_sweep_folds_the_counts(
    session: AsyncSession, outbox: Outbox, settings: Settings
) -> None:
    """The sweep a worker runs every few seconds is what keeps the deltas few."""
    campaign_id = await new_campaign(session)
    await add_messages(session, campaign_id, 5, status="delivered")
    redis = await create_redis(settings)
    try:
        sender = CampaignSender.build(settings, outbox.sessionmaker, redis, outbox)
        report = await sender.sweep()
    finally:
        await redis.aclose()

    assert report["count_deltas_folded"] >= 1
    deltas = select(func.count()).where(campaign_count_deltas.c.campaign_id == campaign_id)
    assert await session.scalar(deltas) == 0
    assert await repository.counts(session, campaign_id) == {("delivered", False): 5}


async def test_a_truncate_of_the_messages_takes_every_count_with_it(session: AsyncSession) -> None:
    campaign_id = await new_campaign(session)
    await add_messages(session, campaign_id, 10)
    await repository.fold_counts(session)
    await add_messages(session, campaign_id, 5)

    await session.execute(text("TRUNCATE messages CASCADE"))

    assert await repository.counts(session, campaign_id) == {}
    assert not await repository.has_pending(session, campaign_id)


@pytest.fixture
async def committed_campaign(engine: AsyncEngine) -> AsyncIterator[uuid.UUID]:
    """A campaign with 40 messages, committed (two transactions must see it), removed after."""
    live = create_sessionmaker(engine)
    async with transaction(live) as session:
        campaign_id = await new_campaign(session)
        await add_messages(session, campaign_id, 40)
    try:
        yield campaign_id
    finally:
        async with transaction(live) as session:
            await session.execute(delete(Message).where(Message.campaign_id == campaign_id))
            await session.execute(delete(Campaign).where(Campaign.id == campaign_id))


async def test_two_folds_at_once_count_nothing_twice(
    engine: AsyncEngine, committed_campaign: uuid.UUID
) -> None:
    """A second fold while the first is under way does nothing (it does not wait on the
    first's rows, nor fold them again); writes go on meanwhile and are counted once."""
    live = create_sessionmaker(engine)
    async with live() as first, live() as second, live() as writer:
        assert await repository.fold_counts(first) >= 1  # not committed yet
        assert await asyncio.wait_for(repository.fold_counts(second), 5) == 0
        await writer.execute(
            text("UPDATE messages SET status = 'sending' WHERE campaign_id = :id"),
            {"id": committed_campaign},
        )
        await writer.commit()
        await first.commit()
        await second.commit()
    async with transaction(live) as session:
        assert await repository.fold_counts(session) >= 2  # the writer's
    async with transaction(live) as session:
        assert await repository.counts(session, committed_campaign) == {("sending", False): 40}
        assert await grouped(session, committed_campaign) == {("sending", False): 40}


def test_the_migration_counts_the_campaigns_already_there(fresh_database: str) -> None:  # noqa: F811
    """Upgrading a database whose campaigns have messages: the counts start from them."""
    from alembic import command

    from app.core.migrations import alembic_config, upgrade_to_head
    from tests.support import run_sql

    command.upgrade(alembic_config(fresh_database), "0009_sparse_indexes")
    run_sql(
        fresh_database,
        "INSERT INTO campaigns (id, state, requested_by, messages, chunks, estimate) "
        "VALUES ('0f0f0f0f-0000-4000-8000-000000000010', 'active', 'x', 0, 0, '{}')",
        "INSERT INTO messages (id, category, status, encoding, segments, requested_by, "
        "expires_at, campaign_id, twilio_sid) SELECT gen_random_uuid(), 'marketing', "
        "CASE WHEN n % 3 = 0 THEN 'delivered' ELSE 'queued' END, 'GSM-7', 1, 'x', now(), "
        "'0f0f0f0f-0000-4000-8000-000000000010', CASE WHEN n % 3 = 0 THEN 'SM' || n END "
        "FROM generate_series(1, 30) n",
    )

    upgrade_to_head(fresh_database)
    run_sql(fresh_database, "UPDATE messages SET status = 'sending' WHERE status = 'queued'")

    rows = run_sql(
        fresh_database,
        "SELECT campaign_id::text, status, at_twilio, sum(messages) FROM ("
        "SELECT campaign_id, status, at_twilio, messages FROM campaign_counts UNION ALL "
        "SELECT campaign_id, status, at_twilio, messages FROM campaign_count_deltas) c "
        "GROUP BY 1, 2, 3 HAVING sum(messages) <> 0 ORDER BY 2",
    )
    assert rows == [
        ("0f0f0f0f-0000-4000-8000-000000000010", "delivered", True, 10),
        ("0f0f0f0f-0000-4000-8000-000000000010", "sending", False, 20),
    ]
