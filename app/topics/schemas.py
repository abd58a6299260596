from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.core.types import UserId

MAX_USERS_PER_REQUEST = 10_000

TopicName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"),
]


class SubscribersUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_ids: list[UserId] = Field(
        max_length=MAX_USERS_PER_REQUEST,
        description="Users not known yet are created without a number.",
    )


class SubscribersAdd(SubscribersUpdate):
    user_ids: list[UserId] = Field(min_length=1, max_length=MAX_USERS_PER_REQUEST)


class Subscriber(BaseModel):
    user_id: str
    subscribed_at: datetime


class SubscriberPage(BaseModel):
    topic: str
    subscribers: list[Subscriber]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class TopicChange(BaseModel):
    topic: str
    added: int
    removed: int
    subscriber_count: int
