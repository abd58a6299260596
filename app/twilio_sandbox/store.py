"""In-memory messages and the inbox of each number that was sent to."""

from __future__ import annotations

import itertools
import secrets
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from app.twilio_sandbox.carrier import Status

API_VERSION = "2010-04-01"


def new_message_sid() -> str:
    return "SM" + secrets.token_hex(16)


def messages_uri(account_sid: str) -> str:
    return f"/{API_VERSION}/Accounts/{account_sid}/Messages.json"


def message_uri(account_sid: str, sid: str) -> str:
    return f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}.json"


@dataclass(slots=True, eq=False)
class SandboxMessage:
    sid: str
    # Creation order; lists are newest first by it (date_created only has seconds).
    seq: int
    account_sid: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    num_segments: int
    status: Status
    date_created: datetime
    date_updated: datetime
    date_sent: datetime | None = None
    send_at: datetime | None = None
    status_callback: str | None = None
    price: str | None = None
    error_code: int | None = None
    error_message: str | None = None

    @property
    def uri(self) -> str:
        return message_uri(self.account_sid, self.sid)

    @property
    def filter_date(self) -> datetime:
        """What DateSent filters compare: a message not sent yet counts by its creation."""
        return self.date_sent or self.date_created


@dataclass(frozen=True, slots=True)
class InboxEntry:
    message: SandboxMessage
    # What the handset got: redacting the API resource does not reach into a phone.
    body: str


class MessageStore:
    def __init__(self) -> None:
        self._messages: dict[str, SandboxMessage] = {}
        self._inboxes: defaultdict[str, list[InboxEntry]] = defaultdict(list)
        self._sequence = itertools.count(1)

    def next_seq(self) -> int:
        return next(self._sequence)

    def add(self, message: SandboxMessage) -> None:
        self._messages[message.sid] = message
        self._inboxes[message.to].append(InboxEntry(message, message.body))

    def get(self, sid: str) -> SandboxMessage | None:
        return self._messages.get(sid)

    def delete(self, sid: str) -> SandboxMessage | None:
        return self._messages.pop(sid, None)

    def oldest_first(self) -> list[SandboxMessage]:
        return sorted(self._messages.values(), key=lambda message: message.seq)

    def newest_first(self) -> list[SandboxMessage]:
        return sorted(self._messages.values(), key=lambda message: message.seq, reverse=True)

    def inbox(self, number: str) -> list[InboxEntry]:
        return list(self._inboxes.get(number, ()))

    def clear(self) -> None:
        self._messages.clear()
        self._inboxes.clear()
