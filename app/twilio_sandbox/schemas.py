"""What the sandbox answers: Twilio's Message resource and list page, and its own views."""

from __future__ import annotations

from datetime import datetime, timedelta
from email.utils import format_datetime

from pydantic import BaseModel, ConfigDict, Field

from app.twilio_sandbox.carrier import Status
from app.twilio_sandbox.listing import Page
from app.twilio_sandbox.store import API_VERSION, InboxEntry, SandboxMessage

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def rfc2822(moment: datetime | None) -> str | None:
    """`Thu, 24 Aug 2023 05:01:45 +0000`, as Twilio writes dates. A UTC moment (every one the
    sandbox makes) is written here: email.utils' formatter was ~5% of the sandbox's CPU in a
    campaign, three dates per answer."""
    if moment is None:
        return None
    if moment.utcoffset() != timedelta(0):  # naive, or another zone: the library's way
        return format_datetime(moment, usegmt=False)
    return (
        f"{_DAYS[moment.weekday()]}, {moment.day:02d} {_MONTHS[moment.month - 1]} "
        f"{moment.year:04d} {moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} +0000"
    )


class MessageResource(BaseModel):
    """`#/components/schemas/api.v2010.account.message`: every field, null where unknown."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    account_sid: str
    api_version: str = API_VERSION
    body: str | None
    date_created: str | None
    date_sent: str | None
    date_updated: str | None
    direction: str = "outbound-api"
    error_code: int | None
    error_message: str | None
    from_: str | None = Field(alias="from")
    messaging_service_sid: str | None
    num_media: str = "0"
    num_segments: str
    price: str | None
    price_unit: str | None = "USD"
    sid: str
    status: Status
    subresource_uris: dict[str, str]
    to: str
    uri: str

    @classmethod
    def of(cls, message: SandboxMessage) -> MessageResource:
        return cls(
            account_sid=message.account_sid,
            body=message.body,
            date_created=rfc2822(message.date_created),
            date_sent=rfc2822(message.date_sent),
            date_updated=rfc2822(message.date_updated),
            error_code=message.error_code,
            error_message=message.error_message,
            from_=message.from_,
            messaging_service_sid=message.messaging_service_sid,
            num_segments=str(message.num_segments),
            price=message.price,
            sid=message.sid,
            status=message.status,
            subresource_uris={"media": message.uri.removesuffix(".json") + "/Media.json"},
            to=message.to,
            uri=message.uri,
        )


class MessageList(BaseModel):
    """`ListMessageResponse` of the GET Messages.json 200 answer."""

    messages: list[MessageResource]
    end: int
    first_page_uri: str
    next_page_uri: str | None
    page: int
    page_size: int
    previous_page_uri: str | None
    start: int
    uri: str

    @classmethod
    def of(cls, page: Page) -> MessageList:
        return cls(
            messages=[MessageResource.of(message) for message in page.messages],
            end=page.end,
            first_page_uri=page.first_page_uri,
            next_page_uri=page.next_page_uri,
            page=page.page,
            page_size=page.page_size,
            previous_page_uri=page.previous_page_uri,
            start=page.start,
            uri=page.uri,
        )


class InboxMessage(BaseModel):
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    sid: str
    from_: str | None = Field(alias="from")
    to: str
    body: str
    status: Status
    num_segments: int
    date_created: datetime

    @classmethod
    def of(cls, entry: InboxEntry) -> InboxMessage:
        message = entry.message
        return cls(
            sid=message.sid,
            from_=message.from_,
            to=message.to,
            body=entry.body,
            status=message.status,
            num_segments=message.num_segments,
            date_created=message.date_created,
        )


class Inbox(BaseModel):
    """What one number received, oldest first."""

    number: str
    messages: list[InboxMessage]


class SandboxMessageView(BaseModel):
    """A stored message with what the sandbox knows beyond Twilio's resource."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    sid: str
    from_: str | None = Field(alias="from")
    to: str
    body: str
    status: Status
    num_segments: int
    date_created: datetime
    date_sent: datetime | None
    error_code: int | None
    price: str | None
    messaging_service_sid: str | None
    status_callback: str | None
    send_at: datetime | None

    @classmethod
    def of(cls, message: SandboxMessage) -> SandboxMessageView:
        return cls(
            sid=message.sid,
            from_=message.from_,
            to=message.to,
            body=message.body,
            status=message.status,
            num_segments=message.num_segments,
            date_created=message.date_created,
            date_sent=message.date_sent,
            error_code=message.error_code,
            price=message.price,
            messaging_service_sid=message.messaging_service_sid,
            status_callback=message.status_callback,
            send_at=message.send_at,
        )


class SandboxMessages(BaseModel):
    messages: list[SandboxMessageView]
