from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.core.types import CountryCode, Moment, PhoneInput, Text, UserId
from app.messages.categories import Category
from app.messages.status import Status

# Generous before smart encoding; the 1600-character limit is checked on the final body.
BodyInput = Annotated[Text, StringConstraints(min_length=1, max_length=4000)]
Reference = Annotated[
    Text,
    StringConstraints(min_length=1, max_length=200),
    Field(description="Your own id for the message (a booking, a ticket…), kept and filterable."),
]


class SendRequest(BaseModel):
    """One message, to a user (their number, preferences and opt-out apply) or to a number."""

    model_config = ConfigDict(extra="forbid")

    user_id: UserId | None = Field(default=None, description="Send to this user's number.")
    to: PhoneInput | None = Field(
        default=None, description="Or send to this number (services and admins only)."
    )
    country: CountryCode | None = Field(default=None, description="Region for a national `to`.")
    body: BodyInput
    category: Category = Category.TRANSACTIONAL
    send_at: Moment | None = Field(
        default=None, description="When to send (with a time zone); in the past means now."
    )
    reference: Reference | None = None
    smart_encoding: bool = Field(
        default=False,
        description="Replace typographic look-alikes (’ “ ” – …) so the message stays GSM-7.",
    )

    @model_validator(mode="after")
    def _one_recipient(self) -> SendRequest:
        # A code's body is never stored, so only the code endpoints, which make the code
        # when the message is sent, may send one.
        if self.category is Category.ONE_TIME_CODE:
            raise ValueError("one-time codes are sent by the code endpoints, not /send")
        if (self.user_id is None) == (self.to is None):
            raise ValueError("give exactly one of `user_id` and `to`")
        if self.country is not None and self.to is None:
            raise ValueError("`country` only says how to read `to`")
        return self


class SelfTestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: PhoneInput | None = Field(
        default=None, description="Admins only: another number than their own."
    )
    body: BodyInput = "This is a test message from the SMS service."


class StatusChange(BaseModel):
    status: Status
    twilio_status: str | None
    error_code: int | None
    source: str = Field(description="Who changed it: api, worker, callback, poller, sweeper.")
    at: datetime


class MessageOut(BaseModel):
    id: uuid.UUID
    status: Status
    twilio_status: str | None
    twilio_sid: str | None
    to: str | None = Field(
        description="The recipient, masked: `+1415*****71` (`null`: the user had no number)."
    )
    user_id: str | None
    category: Category
    body: str | None = Field(description="`null` for one-time codes and after retention.")
    encoding: str
    segments: int
    price: Decimal | None = Field(description="Twilio's price once known (negative: a charge).")
    price_unit: str | None
    error_code: int | None
    error_message: str | None
    suppression_reason: str | None = Field(
        description="Why a `suppressed` message was never sent: `opted_out`, `sms_disabled`, "
        "`preference_off`, `no_phone_number`, `phone_not_verified`, `country_not_allowed`."
    )
    reference: str | None
    requested_by: str
    send_at: datetime | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    final_at: datetime | None
    history: list[StatusChange]


class MessagePage(BaseModel):
    messages: list[MessageOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")
