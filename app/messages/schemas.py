from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.core.types import CountryCode, Locale, Moment, PhoneInput, Text, TimeZone, UserId
from app.messages.categories import Category
from app.messages.status import Status
from app.notifications.catalogue import EVENTS
from app.notifications.types import EventName, TemplateData

# Generous before smart encoding; the 1600-character limit is checked on the final body.
BodyInput = Annotated[Text, StringConstraints(min_length=1, max_length=4000)]
Reference = Annotated[
    Text,
    StringConstraints(min_length=1, max_length=200),
    Field(description="Your own id for the message (a booking, a ticket…), kept and filterable."),
]


class SendRequest(BaseModel):
    """One message, to a user (their number, preferences and opt-out apply) or to a number:
    a body, or an event's template rendered with `data` in the recipient's language."""

    model_config = ConfigDict(extra="forbid")

    user_id: UserId | None = Field(default=None, description="Send to this user's number.")
    to: PhoneInput | None = Field(
        default=None, description="Or send to this number (services and admins only)."
    )
    country: CountryCode | None = Field(default=None, description="Region for a national `to`.")
    body: BodyInput | None = Field(default=None, description="The text; or give `template`.")
    template: EventName | None = Field(
        default=None,
        description="Or an event whose template is rendered with `data` in the user's locale "
        "and time zone (`locale` for a number given as `to`).",
    )
    data: TemplateData | None = None
    locale: Locale | None = Field(
        default=None, description="With `template` and `to`: the language (default `en`)."
    )
    time_zone: TimeZone | None = Field(
        default=None,
        description="With `template` and `to`: the zone dates are shown in (default: the "
        "number's; give it for numbers of countries with several zones).",
    )
    category: Category | None = Field(
        default=None,
        description="Which preference applies. Default: the template's, else `transactional`.",
    )
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
        if self.resolved_category is Category.ONE_TIME_CODE:
            raise ValueError("one-time codes are sent by the code endpoints, not /send")
        if (self.user_id is None) == (self.to is None):
            raise ValueError("give exactly one of `user_id` and `to`")
        if self.country is not None and self.to is None:
            raise ValueError("`country` only says how to read `to`")
        if (self.body is None) == (self.template is None):
            raise ValueError("give exactly one of `body` and `template`")
        if self.data is not None and self.template is None:
            raise ValueError("`data` fills a `template`")
        if (self.locale or self.time_zone) is not None and (
            self.template is None or self.to is None
        ):
            raise ValueError("`locale` and `time_zone` are for a `template` sent `to` a number")
        if (
            self.template is not None
            and self.category is not None
            and self.category is not EVENTS[self.template].category
        ):
            raise ValueError(f"`{self.template}` is a `{EVENTS[self.template].category}` message")
        # Spelled out, so a request that names the default is the same request (idempotency).
        self.category = self.resolved_category
        return self

    @property
    def resolved_category(self) -> Category:
        if self.category is not None:
            return self.category
        if self.template is not None:
            return EVENTS[self.template].category
        return Category.TRANSACTIONAL


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


class AuditEvent(BaseModel):
    status: Status
    twilio_status: str | None = Field(description="Twilio's own status, when Twilio said it.")
    error_code: int | None
    error_meaning: str | None = Field(description="What Twilio's error code means.")
    source: str = Field(description="Who changed it: api, worker, callback, poller, sweeper.")
    detail: str | None = Field(
        description="Why, where it is not plain: a suppression reason, `user erased`, "
        "`held for the recipient's quiet hours`, a masked error…"
    )
    at: datetime


class MessageAudit(BaseModel):
    """Who asked for a message, and every change of its status, oldest first."""

    message_id: uuid.UUID
    requested_by: str = Field(
        description="`api_key:<id>` (a service) or `user:<id>` (a user's token); "
        "`erased-user` once that user was erased."
    )
    api_key_name: str | None = Field(
        description="The name of the API key that asked (kept after it is revoked)."
    )
    created_at: datetime
    events: list[AuditEvent]


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
