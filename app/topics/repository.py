from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import all_, cast, delete, func, literal, select
from sqlalchemy.dialects.postgresql import ARRAY, UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.topics.models import TopicSubscription
from app.users.models import User


async def page(
    session: AsyncSession, topic: str, *, after: str | None, limit: int
) -> Sequence[tuple[str, datetime]]:
    statement = (
        select(User.external_id, TopicSubscription.created_at)
        .join(User, User.id == TopicSubscription.user_id)
        .where(TopicSubscription.topic == topic)
        .order_by(User.external_id)
        .limit(limit)
    )
    if after is not None:
        statement = statement.where(User.external_id > after)
    return [(row[0], row[1]) for row in (await session.execute(statement)).all()]


async def lock(session: AsyncSession, topic: str) -> None:
    """Serialises changes to one topic until the transaction ends (a replace must see the
    rows a concurrent add inserted)."""
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(topic))))


async def add(session: AsyncSession, topic: str, user_ids: Sequence[uuid.UUID]) -> int:
    rows = select(literal(topic), func.unnest(cast(sorted(user_ids), ARRAY(UUID))))
    statement = (
        insert(TopicSubscription)
        .from_select([TopicSubscription.topic, TopicSubscription.user_id], rows)
        .on_conflict_do_nothing()
        .returning(TopicSubscription.user_id)
    )
    return len((await session.execute(statement)).all())


async def remove_all_but(session: AsyncSession, topic: str, keep: Sequence[uuid.UUID]) -> int:
    statement = (
        delete(TopicSubscription)
        .where(
            TopicSubscription.topic == topic,
            TopicSubscription.user_id != all_(cast(list(keep), ARRAY(UUID))),
        )
        .returning(TopicSubscription.user_id)
    )
    return len((await session.execute(statement)).all())


async def remove(session: AsyncSession, topic: str, user_id: uuid.UUID | None = None) -> int:
    statement = delete(TopicSubscription).where(TopicSubscription.topic == topic)
    if user_id is not None:
        statement = statement.where(TopicSubscription.user_id == user_id)
    return len((await session.execute(statement.returning(TopicSubscription.user_id))).all())


async def count(session: AsyncSession, topic: str) -> int:
    statement = select(func.count()).where(TopicSubscription.topic == topic)
    return (await session.execute(statement)).scalar_one()


async def subscriber_users(session: AsyncSession, topic: str, *, limit: int) -> list[User]:
    statement = (
        select(User)
        .join(TopicSubscription, TopicSubscription.user_id == User.id)
        .where(TopicSubscription.topic == topic)
        .order_by(User.external_id)
        .limit(limit)
    )
    return list((await session.execute(statement)).scalars())
