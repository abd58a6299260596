"""What we send to and read from Twilio's Messages resource."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator


@dataclass(frozen=True, slots=True)
class NewMessage:
    to: str
    body: str
    from_number: str | None = None
    messaging_service_sid: str | None = None
    status_callback: str | None = None
    validity_period: int | None = None
    smart_encoded: bool = False

    def form(self) -> dict[str, str]:
        fields = {"To": self.to, "Body": self.body}
        if self.messaging_service_sid:
            fields["MessagingServiceSid"] = self.messaging_service_sid
        elif self.from_number:
            fields["From"] = self.from_number
        if self.status_callback:
            fields["StatusCallback"] = self.status_callback
        if self.validity_period is not None:
            fields["ValidityPeriod"] = str(self.validity_period)
        if self.smart_encoded:
            fields["SmartEncoded"] = "true"
        return fields


# Dates are to the second, and a busy worker reads the same few each second (three per answer):
# parsing them was ~10% of a create's CPU in the client.
@functools.lru_cache(maxsize=256)
def _parse_rfc2822(text: str) -> datetime:
    return parsedate_to_datetime(text)


class TwilioMessage(BaseModel):
    """The fields of `api.v2010.account.message` this service uses."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    sid: str
    status: str
    to: str | None = None
    from_: str | None = Field(default=None, alias="from")
    body: str | None = None
    num_segments: int | None = None
    price: str | None = None
    price_unit: str | None = None
    error_code: int | None = None
    error_message: str | None = None
    messaging_service_sid: str | None = None
    date_created: datetime | None = None
    date_updated: datetime | None = None
    date_sent: datetime | None = None

    @field_validator("date_created", "date_updated", "date_sent", mode="before")
    @classmethod
    def _rfc2822(cls, value: object) -> object:
        return _parse_rfc2822(value) if isinstance(value, str) else value

    @field_validator("num_segments", mode="before")
    @classmethod
    def _number_in_a_string(cls, value: object) -> object:
        if isinstance(value, str):
            return int(value) if value.isdigit() else None
        return value


class MessagePage(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    messages: list[TwilioMessage]
    next_page_uri: str | None = None
