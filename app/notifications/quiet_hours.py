"""Quiet hours (SPEC §6): bulk and marketing messages that would land in the recipient's quiet
hours wait for the morning; codes, security alerts and reminders are never held.

Pure: no I/O. `recipient_zones` says where a recipient may be, `quiet_until` when a held message
may go. The window is `[start, end)` in local wall time and may cross midnight.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from app.core.phone import check_phone_number
from app.messages.categories import Category

# Bulk campaigns pass held=True themselves, whatever their category.
HELD_CATEGORIES: frozenset[Category] = frozenset({Category.MARKETING})

# Past this, the zones have no common morning: the first zone decides.
_SEARCH_LIMIT = timedelta(hours=48)
_UTC_ZONE = ZoneInfo("UTC")
# A key naming the host's zone, not the recipient's.
_HOST_ZONE_KEYS = frozenset({"localtime"})
# The region libphonenumber uses for "unknown": only numbers with a leading + parse.
_NO_REGION = "ZZ"


def recipient_zones(profile_zone: str | None, e164: str | None) -> tuple[ZoneInfo, ...]:
    """The zones a recipient may be in: the profile's zone if it names a real IANA zone, else the
    number's zones, else UTC. Never raises for bad input."""
    if profile_zone:
        zone = _zone(profile_zone)
        if zone is not None:
            return (zone,)
    if e164:
        zones = tuple(zone for key in _number_zone_keys(e164) if (zone := _zone(key)) is not None)
        if zones:
            return zones
    return (_UTC_ZONE,)


def _zone(key: str) -> ZoneInfo | None:
    if key in _HOST_ZONE_KEYS:
        return None
    try:
        return ZoneInfo(key)
    # Not found (KeyError), malformed or absolute keys and non-TZif files (ValueError),
    # directories such as "Europe" (OSError).
    except (KeyError, ValueError, OSError):
        return None


def _number_zone_keys(e164: str) -> tuple[str, ...]:
    # check_phone_number already turns libphonenumber's zones into ours (no "Etc/Unknown",
    # Ofcom's fictional mobiles in London); invalid numbers get none.
    try:
        return check_phone_number(e164, None, _NO_REGION).time_zones
    except Exception:  # libphonenumber on hostile input; a zone is not worth failing a send.
        return ()


def quiet_until(
    moment: datetime, zones: Sequence[ZoneInfo], start: time, end: time
) -> datetime | None:
    """None when `moment` (aware) is outside quiet hours in every zone; otherwise the earliest
    aware UTC datetime >= `moment` at which no zone is in quiet hours. If the zones share no
    morning within 48 hours, the earliest time the first zone is out of quiet hours.
    `start == end`: never quiet."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("moment must be timezone-aware")
    if start == end or not any(_window_end(moment, zone, start, end) for zone in zones):
        return None
    return (
        _first_clear(moment, zones, start, end)
        # A single zone always clears within a day or two (a gap may swallow one morning).
        or _first_clear(moment, zones[:1], start, end)
        or _window_end(moment, zones[0], start, end)
    )


def _first_clear(
    moment: datetime, zones: Sequence[ZoneInfo], start: time, end: time
) -> datetime | None:
    """The earliest instant >= `moment` out of quiet hours in every zone, if within the limit."""
    current = moment.astimezone(UTC)
    deadline = current + _SEARCH_LIMIT
    # Each push lands on a window end later than `current`, and there are only a few such ends
    # per zone per day, so this stops.
    while current <= deadline:
        pushed = False
        for zone in zones:
            window_end = _window_end(current, zone, start, end)
            if window_end is not None and window_end > current:
                current = window_end
                pushed = True
        if not pushed:
            return current
    return None


def _window_end(moment: datetime, zone: ZoneInfo, start: time, end: time) -> datetime | None:
    """The UTC instant the quiet window containing `moment` ends in `zone`; None if not quiet."""
    local = moment.astimezone(zone)
    wall = local.time()
    if start < end:
        quiet = start <= wall < end
        end_date = local.date()
    else:
        quiet = wall >= start or wall < end
        end_date = local.date() + timedelta(days=1) if wall >= start else local.date()
    if not quiet:
        return None
    later = [instant for instant in _instants(end_date, end, zone) if instant > moment]
    # There is always one (the end wall time is later than `moment`'s); never go back in time.
    return min(later) if later else moment.astimezone(UTC)


def _instants(day: date, wall: time, zone: ZoneInfo) -> list[datetime]:
    """The UTC instants at which `zone`'s clocks read `wall` on `day`: two in a fall-back fold;
    in a spring-forward gap, none, so the first instant after the gap stands in."""
    naive = datetime.combine(day, wall.replace(tzinfo=None, fold=0))
    first = naive.replace(tzinfo=zone).astimezone(UTC)
    second = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None, fold=0) == naive:
        return [first, second] if second != first else [first]
    # In a gap fold=1 reads the wall time with the offset after the transition (the earlier
    # instant, before the gap) and fold=0 with the one before it (after the gap): the
    # transition lies between them. Bisect to the microsecond.
    before, after = min(first, second), max(first, second)
    after_offset = after.astimezone(zone).utcoffset()
    while after - before > timedelta(microseconds=1):
        middle = before + (after - before) // 2
        if middle.astimezone(zone).utcoffset() == after_offset:
            after = middle
        else:
            before = middle
    return [after]
