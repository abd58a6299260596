"""Which event a reminder sends, by how long before the booking it goes."""

from __future__ import annotations

from datetime import timedelta

DEFAULT_OFFSETS_MINUTES = (24 * 60, 60)
# The 24 h and 1 h texts say "tomorrow" and "in 1 hour"; any other offset gets the plain one.
_EVENT_BY_OFFSET = {24 * 60: "booking.reminder_24h", 60: "booking.reminder_1h"}
GENERIC_EVENT = "booking.reminder"
REMINDER_EVENTS = frozenset({*_EVENT_BY_OFFSET.values(), GENERIC_EVENT})


def event_for(offset_minutes: int) -> str:
    return _EVENT_BY_OFFSET.get(offset_minutes, GENERIC_EVENT)


def late_tolerance(offset_minutes: int) -> timedelta:
    """How late a reminder may still go: a quarter of its lead time (6 h for the 24 h one,
    15 min for the 1 h one). Later than that, "tomorrow" or "in 1 hour" would be wrong, so
    it expires unsent."""
    return timedelta(minutes=offset_minutes / 4)
