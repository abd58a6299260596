"""How far behind sending is: the queue's depth and the database's backlog (sampled by the
sweep), how late each message starts against when it was due, and how long sends wait for
their sender's rate limit."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from prometheus_client import Counter, Histogram

from app.core.metrics import SampledGauge

# The sweep runs every 5 s in one worker or another: a sample older than this is some other
# worker's turn now, and its process stops exporting it.
_FRESH_FOR_SECONDS = 60.0

QUEUE_DEPTH = SampledGauge(
    "sms_queue_depth",
    "Jobs on arq's queue due now (waiting or running; not those deferred to later), sampled "
    "by the sweep: take max() over the processes scraped",
    fresh_for_seconds=_FRESH_FOR_SECONDS,
)
MESSAGES_DUE = SampledGauge(
    "sms_messages_due",
    "Messages in PostgreSQL due to be sent and free to claim, sampled by the sweep: "
    "take max() over the processes scraped",
    fresh_for_seconds=_FRESH_FOR_SECONDS,
)
SEND_LATENESS = Histogram(
    "sms_send_lateness_seconds",
    "From when a message was due (created, or its send_at) to a worker's first claim of it",
    ["category"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
SENDER_LIMIT_LATE = Counter(
    "sms_sender_limit_late_total",
    "Sends woken too late for their sender's slot (a busy event loop): missed (the slot was "
    "given up and another reserved) or went (late anyway, after the last attempt)",
    ["outcome"],
)
SENDER_LIMIT_WAIT = Histogram(
    "sms_sender_limit_wait_seconds",
    "How long a send waited for its sender's slot (SENDER_SEGMENTS_PER_SECOND), by lane: "
    "priority (one-time codes) or normal",
    ["lane"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class _Claimed(Protocol):
    @property
    def category(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def send_at(self) -> datetime | None: ...
    @property
    def next_attempt_at(self) -> datetime: ...
    @property
    def last_attempt_at(self) -> datetime | None: ...


def observe_lateness(claimed: _Claimed) -> None:
    """For a first attempt just claimed (its `last_attempt_at` is the claim's time)."""
    if claimed.last_attempt_at is None:
        return
    due = max(claimed.send_at or claimed.created_at, claimed.next_attempt_at)
    late = (claimed.last_attempt_at - due).total_seconds()
    SEND_LATENESS.labels(claimed.category).observe(max(0.0, late))
