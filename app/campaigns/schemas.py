from __future__ import annotations

import re
import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.core.types import CountryCode, Locale, Moment, PhoneInput, UserId
from app.messages.schemas import BodyInput, Reference
from app.notifications.overrides import PLACEHOLDER
from app.notifications.types import CODE_EVENTS, EventName, TemplateData
from app.topics.schemas import TopicName

MAX_RECIPIENTS = 100_000


class UserRecipient(BaseModel):
    """A user, with values of their own for the text."""

    model_config = ConfigDict(extra="forbid")

    user_id: UserId
    data: TemplateData | None = Field(
        default=None, description="Placeholder values for this recipient; they win over `data`."
    )


class NumberRecipient(BaseModel):
    """A number, with values of its own for the text."""

    model_config = ConfigDict(extra="forbid")

    to: PhoneInput
    data: TemplateData | None = Field(
        default=None, description="Placeholder values for this recipient; they win over `data`."
    )


class BulkRecipients(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_ids: list[UserId | UserRecipient] = Field(
        default_factory=list,
        max_length=MAX_RECIPIENTS,
        description="Users, as ids or as `{user_id, data}`. Their number, its verification, "
        "their `marketing` preference, STOP and quiet hours (their time zone) apply.",
    )
    numbers: list[PhoneInput | NumberRecipient] = Field(
        default_factory=list,
        max_length=MAX_RECIPIENTS,
        description="Numbers, as given or as `{to, data}`. STOP and quiet hours (the number's "
        "time zone) apply; invalid numbers and numbers that cannot take SMS are left out and "
        "counted.",
    )
    topic: TopicName | None = Field(default=None, description="Every subscriber of this topic.")
    country: CountryCode | None = Field(
        default=None, description="Region of `numbers` written without `+country code`."
    )

    @model_validator(mode="after")
    def _someone(self) -> BulkRecipients:
        if not self.user_ids and not self.numbers and self.topic is None:
            raise ValueError("give `user_ids`, `numbers`, a `topic`, or several")
        if len(self.user_ids) + len(self.numbers) > MAX_RECIPIENTS:
            raise ValueError(f"at most {MAX_RECIPIENTS} recipients in one campaign")
        return self


class BulkSendRequest(BaseModel):
    """One text to many recipients, as a marketing campaign: sent in chunks, paused, resumed
    or cancelled as a whole."""

    model_config = ConfigDict(extra="forbid")

    body: BodyInput | None = Field(
        default=None,
        description="The text. `{name}` placeholders are filled for each recipient from its "
        "own `data`, else from the shared `data`; `{{` and `}}` are literal braces.",
    )
    template: EventName | None = Field(
        default=None,
        description="Or an event of the catalogue, rendered in each recipient's language and "
        "time zone with the shared `data` and the recipient's own.",
    )
    data: TemplateData | None = Field(
        default=None, description="Values shared by every recipient (placeholders, template)."
    )
    locale: Locale | None = Field(
        default=None,
        description="With `template`: the language of `numbers` (default `en`); users read "
        "their own.",
    )
    recipients: BulkRecipients
    send_at: Moment | None = Field(
        default=None, description="When to send (with a time zone); in the past means now."
    )
    reference: Reference | None = None
    smart_encoding: bool = Field(
        default=False,
        description="Replace typographic look-alikes (curly quotes, dashes, ellipses) so the "
        "text stays GSM-7.",
    )
    dry_run: bool = Field(
        default=False, description="Only the estimate: nothing is stored and nothing sent."
    )

    @field_validator("template")
    @classmethod
    def _not_a_code(cls, event: str | None) -> str | None:
        if event in CODE_EVENTS:
            raise ValueError("codes are sent by the code endpoints, which make the code")
        return event

    @model_validator(mode="after")
    def _one_text(self) -> BulkSendRequest:
        if (self.body is None) == (self.template is None):
            raise ValueError("give exactly one of `body` and `template`")
        if self.locale is not None and self.template is None:
            raise ValueError("`locale` is the language a `template` is rendered in")
        if self.body is not None and re.search(r"[{}]", PLACEHOLDER.sub("", self.body)):
            raise ValueError("a brace that is no `{placeholder}`: write `{{` and `}}` for braces")
        return self


class CampaignStatus(StrEnum):
    SCHEDULED = "scheduled"  # nothing due yet (a later `send_at`, or everyone's night)
    RUNNING = "running"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    COMPLETED = "completed"  # nothing left to hand to Twilio


class Suppressed(BaseModel):
    """Recipients who get nothing, by reason. Those with a number or a user are recorded as a
    `suppressed` message with the reason; the last three are not recipients at all."""

    opted_out: int = Field(default=0, description="The number replied STOP.")
    preference_off: int = Field(default=0, description="The user's `marketing` preference is off.")
    sms_disabled: int = Field(default=0, description="The user turned SMS off.")
    no_phone_number: int = 0
    phone_not_verified: int = 0
    country_not_allowed: int = 0
    invalid_number: int = Field(
        default=0, description="Not a number, or one that cannot take SMS (landline, premium…)."
    )
    duplicate: int = Field(
        default=0, description="A number (or user) already in the campaign: sent once."
    )
    unknown_user: int = Field(default=0, description="A user id this service does not know.")


class InvalidNumber(BaseModel):
    index: int = Field(description="Its position in `recipients.numbers`.")
    reason: str = Field(description="Why: `too_short`, `not_sms_capable`, … (validate-phone).")


class Estimate(BaseModel):
    requested: int = Field(description="User ids, numbers and topic subscribers given.")
    recipients: int = Field(description="Messages to send (queued or scheduled).")
    held_for_quiet_hours: int = Field(
        description="Of these, messages that wait for their recipient's morning."
    )
    suppressed: Suppressed
    segments: int = Field(description="SMS segments of the messages to send.")
    estimated_cost: Decimal = Field(
        description="`segments` times `SMS_ESTIMATED_PRICE_PER_SEGMENT`, in `currency`."
    )
    currency: str
    invalid_numbers: list[InvalidNumber] = Field(
        description="The first 100 invalid numbers, by position."
    )


class CampaignCounts(BaseModel):
    """The campaign's messages by status, now."""

    queued: int = 0
    scheduled: int = 0
    sending: int = 0
    sent: int = 0
    delivered: int = 0
    undelivered: int = 0
    failed: int = 0
    suppressed: int = 0
    cancelled: int = 0
    total: int = 0


class Campaign(BaseModel):
    id: uuid.UUID | None = Field(description="`null` for a dry run: nothing was stored.")
    status: CampaignStatus | None = Field(description="`null` for a dry run.")
    dry_run: bool
    reference: str | None
    send_at: datetime | None
    created_at: datetime | None
    finished_at: datetime | None = Field(
        description="When it completed, or when its cancellation reached every message."
    )
    estimate: Estimate = Field(description="As computed when the campaign was accepted.")
    counts: CampaignCounts | None = Field(description="`null` for a dry run.")
