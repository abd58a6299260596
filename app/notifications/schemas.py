from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.core.types import Moment, UserId
from app.messages.schemas import Reference
from app.messages.status import Status
from app.notifications.types import CODE_EVENTS, EventName, TemplateData
from app.topics.schemas import TopicName

MAX_RECIPIENTS = 10_000


class Recipients(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_ids: list[UserId] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    topic: TopicName | None = Field(
        default=None, description="Every subscriber of this topic (a team, for example)."
    )

    @model_validator(mode="after")
    def _someone(self) -> Recipients:
        if not self.user_ids and self.topic is None:
            raise ValueError("give `user_ids`, a `topic`, or both")
        return self


class NotifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event: EventName
    data: TemplateData
    recipients: Recipients
    send_at: Moment | None = Field(
        default=None, description="When to send (with a time zone); in the past means now."
    )
    reference: Reference | None = Field(
        default=None,
        description="Your id for what this is about. For `booking.*` events it is the booking "
        "id: `booking.confirmed` can then be re-sent, and `booking.cancelled` (which needs it) "
        "cancels the booking's reminders.",
    )

    @field_validator("event")
    @classmethod
    def _not_a_code(cls, event: str) -> str:
        if event in CODE_EVENTS:
            raise ValueError("codes are sent by the code endpoints, which make the code")
        return event

    @model_validator(mode="after")
    def _booking_cancelled_names_its_booking(self) -> NotifyRequest:
        if self.event == "booking.cancelled" and self.reference is None:
            raise ValueError("`booking.cancelled` needs the booking id as `reference`")
        return self


SkipReason = Literal[
    "unknown_user",
    "no_phone_number",
    "phone_not_verified",
    "country_not_allowed",
    "sms_disabled",
    "preference_off",
    "opted_out",
]


class Queued(BaseModel):
    user_id: str
    message_id: uuid.UUID
    status: Status = Field(description="`queued`, or `scheduled` (a later `send_at`, quiet hours).")


class Skipped(BaseModel):
    user_id: str
    reason: SkipReason
    message_id: uuid.UUID | None = Field(
        description="The message recorded as `suppressed` (none for an unknown user)."
    )


class NotifyResult(BaseModel):
    notification_id: uuid.UUID
    event: str
    queued: list[Queued]
    skipped: list[Skipped]
    cancelled_reminders: list[uuid.UUID] = Field(
        default_factory=list,
        description="`booking.cancelled`: the booking's reminders cancelled before they went.",
    )
