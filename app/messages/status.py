"""A message's statuses, their order, and how Twilio's statuses map onto them."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SUPPRESSED = "suppressed"


STATUSES = tuple(status.value for status in Status)
FINAL = frozenset(
    {Status.DELIVERED, Status.UNDELIVERED, Status.FAILED, Status.CANCELLED, Status.SUPPRESSED}
)

# Status only moves forward: a change to a lower or equal rank is ignored.
RANK = {
    Status.SCHEDULED: 0,
    Status.QUEUED: 1,
    Status.SENDING: 2,
    Status.SENT: 3,
    Status.DELIVERED: 4,
    Status.UNDELIVERED: 4,
    Status.FAILED: 4,
    Status.CANCELLED: 4,
    Status.SUPPRESSED: 4,
}

# Twilio's raw statuses (kept beside ours) and what they mean for us.
FROM_TWILIO = {
    "accepted": Status.SENDING,
    "scheduled": Status.SENDING,
    "queued": Status.SENDING,
    "sending": Status.SENDING,
    "sent": Status.SENT,
    "delivered": Status.DELIVERED,
    "read": Status.DELIVERED,
    "partially_delivered": Status.DELIVERED,
    "undelivered": Status.UNDELIVERED,
    "failed": Status.FAILED,
    "canceled": Status.CANCELLED,
}


def moves_forward(current: Status, new: Status) -> bool:
    return current not in FINAL and RANK[new] > RANK[current]
