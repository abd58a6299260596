"""The Messages API's logic: create (with Twilio's checks), fetch, list, update, delete.
No HTTP here: refusals are TwilioApiError."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from app.messages.encoding import MAX_BODY_CHARACTERS, shape, smart_encode
from app.twilio_sandbox import carrier
from app.twilio_sandbox.carrier import FINAL_STATUSES, Status
from app.twilio_sandbox.delivery import Delivery, DeliveryPlan
from app.twilio_sandbox.errors import bad_request, not_found
from app.twilio_sandbox.listing import ListQuery, Page, paginate
from app.twilio_sandbox.store import (
    MessageStore,
    SandboxMessage,
    message_uri,
    messages_uri,
    new_message_sid,
)

_MESSAGING_SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")
SCHEDULE_MIN = timedelta(seconds=300)
SCHEDULE_MAX = timedelta(days=35)


class MessagesService:
    def __init__(self, account_sid: str, store: MessageStore, delivery: Delivery) -> None:
        self._account_sid = account_sid
        self._store = store
        self._delivery = delivery

    def create(self, form: Mapping[str, str], plan: DeliveryPlan) -> SandboxMessage:
        """Checks in Twilio's order; an accepted message is stored, put in its number's inbox
        and handed to the carrier."""
        now = datetime.now(UTC)
        to = form.get("To") or None
        if to is None:
            raise bad_request(21604)
        sender = form.get("From") or None
        service_sid = form.get("MessagingServiceSid") or None
        if sender is None and service_sid is None:
            raise bad_request(21603)
        body = form.get("Body") or ""
        if not body:
            raise bad_request(21602)
        if form.get("SmartEncoded", "").lower() == "true":
            body = smart_encode(body)
        if len(body) > MAX_BODY_CHARACTERS:
            raise bad_request(21617)
        if not carrier.E164.match(to):
            raise bad_request(21211, f"The 'To' number {to} is not a valid phone number.")
        if service_sid is not None and not _MESSAGING_SERVICE_SID.match(service_sid):
            raise bad_request(21701)
        code = carrier.refusal(sender, to)
        if code is not None:
            raise bad_request(code)
        status_callback = form.get("StatusCallback") or None
        if status_callback is not None and not _is_http_url(status_callback):
            raise bad_request(21609)
        send_at = _send_at(form, service_sid, now)
        if send_at is not None:
            status = Status.SCHEDULED
        else:
            status = Status.ACCEPTED if service_sid is not None else Status.QUEUED
        message = SandboxMessage(
            sid=new_message_sid(),
            seq=self._store.next_seq(),
            account_sid=self._account_sid,
            to=to,
            from_=sender,
            messaging_service_sid=service_sid,
            body=body,
            num_segments=shape(body).segments,
            status=status,
            date_created=now,
            date_updated=now,
            send_at=send_at,
            status_callback=status_callback,
        )
        self._store.add(message)
        self._delivery.start(message, plan)
        return message

    def fetch(self, sid: str) -> SandboxMessage:
        message = self._store.get(sid)
        if message is None:
            raise not_found(message_uri(self._account_sid, sid))
        return message

    def list(self, params: Sequence[tuple[str, str]]) -> Page:
        query = ListQuery.parse(params)
        return paginate(self._store.newest_first(), query, messages_uri(self._account_sid))

    def update(self, sid: str, form: Mapping[str, str]) -> SandboxMessage:
        """`Status=canceled` cancels a scheduled message; `Body=` redacts a finished one."""
        message = self.fetch(sid)
        if ("Status" in form) == ("Body" in form):
            raise bad_request(30400, "Give either Status=canceled or an empty Body.")
        now = datetime.now(UTC)
        if "Status" in form:
            if form["Status"] != Status.CANCELED:
                raise bad_request(30400, "Status can only be set to canceled.")
            if message.status != Status.SCHEDULED:
                raise bad_request(30409)
            self._delivery.stop(sid)
            message.status, message.date_updated = Status.CANCELED, now
            self._delivery.announce(message)
            return message
        if form["Body"] != "":
            raise bad_request(30400, "A body can only be redacted: send an empty Body.")
        if message.status not in FINAL_STATUSES:
            raise bad_request(30400, "Only a message in a final status can be redacted.")
        message.body, message.date_updated = "", now
        return message

    def delete(self, sid: str) -> None:
        # The resource goes; a message already on its way still reaches the handset.
        if self._store.delete(sid) is None:
            raise not_found(message_uri(self._account_sid, sid))


def _send_at(form: Mapping[str, str], service_sid: str | None, now: datetime) -> datetime | None:
    schedule_type = form.get("ScheduleType") or None
    raw = form.get("SendAt") or None
    if schedule_type is None and raw is None:
        return None
    if schedule_type is not None and schedule_type != "fixed":
        raise bad_request(35126)
    if schedule_type is None or raw is None or service_sid is None:
        raise bad_request(35111)
    try:
        send_at = datetime.fromisoformat(raw)
    except ValueError:
        raise bad_request(35114, "SendAt must be an ISO 8601 time.") from None
    if send_at.tzinfo is None:
        send_at = send_at.replace(tzinfo=UTC)
    if not SCHEDULE_MIN <= send_at - now <= SCHEDULE_MAX:
        raise bad_request(35114)
    return send_at


def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)
