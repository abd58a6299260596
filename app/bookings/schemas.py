from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from app.bookings.reminders import DEFAULT_OFFSETS_MINUTES
from app.core.types import Moment, Text, UserId
from app.messages.status import Status

BookingId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"),
]
Name = Annotated[Text, StringConstraints(min_length=1, max_length=200)]
# Up to 30 days ahead: a reminder further out than any booking horizon is a typo.
Offset = Annotated[int, Field(ge=1, le=30 * 24 * 60)]


class RemindersRequest(BaseModel):
    """A booking's customer, start and details; its reminders go `offsets_minutes` before."""

    model_config = ConfigDict(extra="forbid")

    user_id: UserId = Field(description="The customer (a user this service knows).")
    starts_at: Moment
    service_name: Name
    provider_name: Name
    offsets_minutes: list[Offset] = Field(
        default=list(DEFAULT_OFFSETS_MINUTES),
        min_length=1,
        max_length=10,
        description="How long before the start each reminder goes (default 24 h and 1 h). "
        '1440 and 60 use the "tomorrow" and "in 1 hour" texts; others a plain reminder.',
    )

    @field_validator("offsets_minutes")
    @classmethod
    def _distinct(cls, offsets: list[int]) -> list[int]:
        return sorted(set(offsets), reverse=True)


class Reminder(BaseModel):
    offset_minutes: int
    event: str
    send_at: datetime
    message_id: uuid.UUID | None = Field(description="`null`: not scheduled (see `skipped`).")
    status: Status | None
    suppression_reason: str | None
    skipped: str | None = Field(
        description="`in_the_past`: its time had passed when the booking was scheduled or "
        "moved; a reminder is never sent late."
    )


class BookingReminders(BaseModel):
    booking_id: str
    user_id: str
    starts_at: datetime
    cancelled: bool
    reminders: list[Reminder]


class BookingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    booking_id: BookingId
