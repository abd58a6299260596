"""The simulated carrier's rules: Twilio's magic test numbers, outcomes, prices. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Final


class Status(StrEnum):
    """`message_enum_status` of the OpenAPI description."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    RECEIVING = "receiving"
    RECEIVED = "received"
    ACCEPTED = "accepted"
    SCHEDULED = "scheduled"
    READ = "read"
    PARTIALLY_DELIVERED = "partially_delivered"
    CANCELED = "canceled"


FINAL_STATUSES: Final = frozenset(
    {
        Status.DELIVERED,
        Status.UNDELIVERED,
        Status.FAILED,
        Status.CANCELED,
        Status.RECEIVED,
        Status.READ,
    }
)

E164: Final = re.compile(r"^\+[1-9]\d{6,14}$")

VALID_SENDER: Final = "+15005550006"

# Refused synchronously on create (HTTP 400), as Twilio's test credentials do.
FROM_REFUSALS: Final = {
    "+15005550001": 21212,
    "+15005550007": 21606,
    "+15005550008": 21611,
}
TO_REFUSALS: Final = {
    "+15005550001": 21211,
    "+15005550002": 21612,
    "+15005550003": 21408,
    "+15005550004": 21610,
    "+15005550009": 21614,
}

# Accepted, then ending other than delivered (the sandbox's own numbers).
UNDELIVERED_NUMBER: Final = "+15005550020"
FAILED_NUMBER: Final = "+15005550021"
NEVER_FINAL_NUMBER: Final = "+15005550022"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a sent message ends; `status` None means it stays `sent` forever."""

    status: Status | None
    error_code: int | None = None
    error_message: str | None = None


DELIVERED: Final = Outcome(Status.DELIVERED)
OUTCOMES: Final = {
    UNDELIVERED_NUMBER: Outcome(Status.UNDELIVERED, 30003, "Unreachable destination handset"),
    FAILED_NUMBER: Outcome(Status.FAILED, 30008, "Unknown error"),
    NEVER_FINAL_NUMBER: Outcome(None),
}


def refusal(sender: str | None, to: str) -> int | None:
    """The error code Twilio answers a create with for these numbers, if any."""
    if sender is not None and sender in FROM_REFUSALS:
        return FROM_REFUSALS[sender]
    return TO_REFUSALS.get(to)


def outcome(to: str) -> Outcome:
    return OUTCOMES.get(to, DELIVERED)


def price(per_segment: str, segments: int) -> str:
    """`-0.00790` times 2 is `-0.01580`: the unit price's decimals are kept."""
    return format(Decimal(per_segment) * segments, "f")


def dlr_done_date(moment: datetime) -> str:
    """`RawDlrDoneDate`: when the handset's delivery report was done, YYMMDDhhmm."""
    return moment.strftime("%y%m%d%H%M")
