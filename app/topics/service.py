"""Topics: named groups of users (a team, a venue's staff) that one notification can reach."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app.topics import repository
from app.topics.exceptions import NotSubscribed
from app.topics.schemas import Subscriber, SubscriberPage, TopicChange
from app.users.models import User
from app.users.service import ensure_users, get_user


async def list_subscribers(
    session: AsyncSession, topic: str, *, cursor: str | None, limit: int
) -> SubscriberPage:
    rows = await repository.page(session, topic, after=cursor, limit=limit + 1)
    subscribers = [Subscriber(user_id=user_id, subscribed_at=at) for user_id, at in rows[:limit]]
    next_cursor = subscribers[-1].user_id if len(rows) > limit else None
    return SubscriberPage(topic=topic, subscribers=subscribers, next_cursor=next_cursor)


async def add_subscribers(
    session: AsyncSession, topic: str, external_ids: Sequence[str]
) -> TopicChange:
    await repository.lock(session, topic)
    ids = await ensure_users(session, external_ids)
    added = await repository.add(session, topic, list(ids.values()))
    return TopicChange(
        topic=topic, added=added, removed=0, subscriber_count=await repository.count(session, topic)
    )


async def replace_subscribers(
    session: AsyncSession, topic: str, external_ids: Sequence[str]
) -> TopicChange:
    await repository.lock(session, topic)
    ids = list((await ensure_users(session, external_ids)).values())
    removed = await repository.remove_all_but(session, topic, ids)
    added = await repository.add(session, topic, ids)
    return TopicChange(
        topic=topic,
        added=added,
        removed=removed,
        subscriber_count=await repository.count(session, topic),
    )


async def remove_all(session: AsyncSession, topic: str) -> int:
    await repository.lock(session, topic)
    return await repository.remove(session, topic)


async def remove_subscriber(session: AsyncSession, topic: str, external_id: str) -> None:
    await repository.lock(session, topic)
    user = await get_user(session, external_id)
    if not await repository.remove(session, topic, user.id):
        raise NotSubscribed(f"`{external_id}` is not subscribed to `{topic}`")


async def subscriber_users(session: AsyncSession, topic: str, *, limit: int) -> list[User]:
    """Up to `limit` subscribers of the topic (ask for one more to know there are too many)."""
    return await repository.subscriber_users(session, topic, limit=limit)
