from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from app.auth.dependencies import UserManager
from app.core.deps import SessionDep
from app.core.errors import problem_responses
from app.core.types import UserId
from app.topics import service
from app.topics.schemas import (
    SubscriberPage,
    SubscribersAdd,
    SubscribersUpdate,
    TopicChange,
    TopicName,
)

router = APIRouter(
    prefix="/api/topics/{topic}/subscribers",
    tags=["topics"],
    responses=problem_responses(400, 401, 403, 413, 422),
)

TopicPath = Annotated[TopicName, Path(description="e.g. `team-42`.")]


@router.get("", response_model=SubscriberPage, summary="A topic's subscribers, by user id")
async def list_subscribers(
    topic: TopicPath,
    _: UserManager,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[UserId | None, Query(description="`next_cursor` of the last page")] = None,
) -> SubscriberPage:
    return await service.list_subscribers(session, topic, cursor=cursor, limit=limit)


@router.put("", response_model=TopicChange, summary="Replace a topic's subscribers")
async def replace_subscribers(
    topic: TopicPath, body: SubscribersUpdate, _: UserManager, session: SessionDep
) -> TopicChange:
    return await service.replace_subscribers(session, topic, body.user_ids)


@router.post("", response_model=TopicChange, summary="Add subscribers to a topic")
async def add_subscribers(
    topic: TopicPath, body: SubscribersAdd, _: UserManager, session: SessionDep
) -> TopicChange:
    return await service.add_subscribers(session, topic, body.user_ids)


@router.delete("", status_code=status.HTTP_204_NO_CONTENT, summary="Remove every subscriber")
async def remove_all_subscribers(topic: TopicPath, _: UserManager, session: SessionDep) -> None:
    await service.remove_all(session, topic)


@router.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove one subscriber",
    responses=problem_responses(404),
)
async def remove_subscriber(
    topic: TopicPath, user_id: UserId, _: UserManager, session: SessionDep
) -> None:
    await service.remove_subscriber(session, topic, user_id)
