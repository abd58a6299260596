"""Quiet hours (SPEC §6): when a held message may go, and in which zones a recipient may be."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.messages.categories import Category
from app.notifications.quiet_hours import HELD_CATEGORIES, quiet_until, recipient_zones

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
CHICAGO = ZoneInfo("America/Chicago")
KIRITIMATI = ZoneInfo("Pacific/Kiritimati")  # UTC+14
PAGO_PAGO = ZoneInfo("Pacific/Pago_Pago")  # UTC-11: 25 hours behind Kiritimati
UTC_ZONE = ZoneInfo("UTC")
JOHANNESBURG = ZoneInfo("Africa/Johannesburg")  # UTC+2: 12 hours behind Kiritimati
NIGHT = time(21, 0)
MORNING = time(8, 0)


def _quiet(instant: datetime, zone: ZoneInfo, start: time, end: time) -> bool:
    """The rule as written, independently of the module: the local wall time in [start, end)."""
    wall = instant.astimezone(zone).time()
    if start == end:
        return False
    if start < end:
        return start <= wall < end
    return wall >= start or wall < end


def _until(
    moment: datetime, *zones: ZoneInfo, start: time = NIGHT, end: time = MORNING
) -> datetime:
    result = quiet_until(moment, zones, start, end)
    assert result is not None, f"{moment} should be quiet"
    assert result.utcoffset() == timedelta(0)
    assert result >= moment
    return result


def test_only_marketing_is_held_by_category() -> None:
    assert frozenset({Category.MARKETING}) == HELD_CATEGORIES


@pytest.mark.parametrize(
    ("moment", "morning"),
    [
        # Winter and summer: the UTC answer moves with the offset, the local one does not.
        (datetime(2026, 1, 5, 23, tzinfo=PARIS), datetime(2026, 1, 6, 7, tzinfo=UTC)),
        (datetime(2026, 7, 5, 23, tzinfo=PARIS), datetime(2026, 7, 6, 6, tzinfo=UTC)),
    ],
)
def test_late_evening_waits_for_next_morning(moment: datetime, morning: datetime) -> None:
    result = _until(moment, PARIS)
    assert result == morning
    assert result.astimezone(PARIS).replace(tzinfo=None) == moment.replace(
        tzinfo=None, hour=8
    ) + timedelta(days=1)


def test_small_hours_wait_for_the_same_morning() -> None:
    assert _until(datetime(2026, 1, 6, 2, tzinfo=PARIS), PARIS) == datetime(
        2026, 1, 6, 7, tzinfo=UTC
    )


def test_moment_in_another_zone_is_judged_in_the_recipients() -> None:
    # 22:30 UTC is 23:30 in Paris (quiet) but 17:30 in New York (not).
    moment = datetime(2026, 1, 5, 22, 30, tzinfo=UTC)
    assert _until(moment, PARIS) == datetime(2026, 1, 6, 7, tzinfo=UTC)
    assert quiet_until(moment, [NEW_YORK], NIGHT, MORNING) is None


def test_window_is_closed_at_start_and_open_at_end() -> None:
    day = date(2026, 1, 6)
    assert _until(datetime.combine(day, time(7, 59, 59), PARIS), PARIS) == datetime(
        2026, 1, 6, 7, tzinfo=UTC
    )
    assert quiet_until(datetime.combine(day, MORNING, PARIS), [PARIS], NIGHT, MORNING) is None
    assert quiet_until(datetime.combine(day, time(20, 59), PARIS), [PARIS], NIGHT, MORNING) is None
    last_instant = datetime.combine(day, time(20, 59, 59, 999_999), PARIS)
    assert quiet_until(last_instant, [PARIS], NIGHT, MORNING) is None
    assert _until(datetime.combine(day, NIGHT, PARIS), PARIS) == datetime(2026, 1, 7, 7, tzinfo=UTC)


def test_window_not_crossing_midnight() -> None:
    lunch, after = time(13, 0), time(14, 0)
    day = date(2026, 1, 6)
    two_pm = datetime(2026, 1, 6, 13, tzinfo=UTC)
    for wall in (time(0, 0), time(12, 59, 59), time(14, 0), time(23, 0)):
        assert quiet_until(datetime.combine(day, wall, PARIS), [PARIS], lunch, after) is None
    for wall in (time(13, 0), time(13, 30), time(13, 59, 59)):
        assert _until(datetime.combine(day, wall, PARIS), PARIS, start=lunch, end=after) == two_pm


@pytest.mark.parametrize("wall", [time(0, 0), time(3, 0), time(21, 0), time(23, 59)])
def test_equal_start_and_end_mean_no_quiet_hours(wall: time) -> None:
    moment = datetime.combine(date(2026, 1, 6), wall, PARIS)
    assert quiet_until(moment, [PARIS], NIGHT, NIGHT) is None
    assert quiet_until(moment, [PARIS], time(0, 0), time(0, 0)) is None


def test_no_zones_means_nothing_to_wait_for() -> None:
    assert quiet_until(datetime(2026, 1, 6, 2, tzinfo=UTC), [], NIGHT, MORNING) is None


def test_naive_moment_is_refused() -> None:
    naive = datetime(2026, 1, 6, 2)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="aware"):
        quiet_until(naive, [PARIS], NIGHT, MORNING)


def test_spring_forward_day() -> None:
    # 2026-03-08 in New York: 02:00 EST becomes 03:00 EDT; 02:00-02:59 never happens.
    assert _until(datetime(2026, 3, 8, 1, 30, tzinfo=NEW_YORK), NEW_YORK) == datetime(
        2026, 3, 8, 12, tzinfo=UTC
    )
    # A window ending at 02:30 ends when the clocks jump: the first instant after the gap.
    gap_end = time(2, 30)
    for moment in (
        datetime(2026, 3, 7, 23, tzinfo=NEW_YORK),
        datetime(2026, 3, 8, 1, 0, tzinfo=NEW_YORK),
        datetime(2026, 3, 8, 1, 59, 59, tzinfo=NEW_YORK),
    ):
        result = _until(moment, NEW_YORK, end=gap_end)
        assert result == datetime(2026, 3, 8, 7, tzinfo=UTC)
        assert result.astimezone(NEW_YORK).time() == time(3, 0)
        assert not _quiet(result, NEW_YORK, NIGHT, gap_end)
    # Just after the gap the window is over.
    after_gap = datetime(2026, 3, 8, 3, 0, tzinfo=NEW_YORK)
    assert quiet_until(after_gap, [NEW_YORK], NIGHT, gap_end) is None


def test_fall_back_day() -> None:
    # 2026-11-01 in New York: 02:00 EDT becomes 01:00 EST; 01:00-01:59 happens twice.
    assert _until(datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK), NEW_YORK) == datetime(
        2026, 11, 1, 13, tzinfo=UTC
    )
    assert _until(datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=NEW_YORK), NEW_YORK) == datetime(
        2026, 11, 1, 13, tzinfo=UTC
    )
    # 02:30 exists once that day (EST).
    assert _until(datetime(2026, 11, 1, 1, 0, tzinfo=NEW_YORK), NEW_YORK, end=time(2, 30)) == (
        datetime(2026, 11, 1, 7, 30, tzinfo=UTC)
    )
    # A window ending at the repeated 01:30 ends at the next 01:30 on the clock.
    twice = time(1, 30)
    first_pass = datetime(2026, 11, 1, 1, 10, tzinfo=NEW_YORK)  # EDT
    second_pass = datetime(2026, 11, 1, 1, 10, fold=1, tzinfo=NEW_YORK)  # EST
    assert _until(first_pass, NEW_YORK, end=twice) == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    assert _until(second_pass, NEW_YORK, end=twice) == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)


def test_window_ending_at_a_midnight_that_never_comes() -> None:
    # 2026-09-06 in Santiago: 00:00 -04 becomes 01:00 -03; that day has no midnight.
    santiago = ZoneInfo("America/Santiago")
    result = _until(datetime(2026, 9, 5, 22, tzinfo=santiago), santiago, end=time(0, 0))
    assert result == datetime(2026, 9, 6, 4, tzinfo=UTC)
    assert result.astimezone(santiago).time() == time(1, 0)
    # With the window from 00:30, the gap swallows that day's whole morning: the next one.
    moment, start, end = datetime(2026, 9, 6, 0, tzinfo=UTC), time(0, 30), time(0, 0)
    next_morning = datetime(2026, 9, 7, 3, tzinfo=UTC)
    assert _until(moment, santiago, start=start, end=end) == next_morning
    # No common morning with UTC then: the first zone's, not a time it is still quiet.
    assert _until(moment, santiago, UTC_ZONE, start=start, end=end) == next_morning


@pytest.mark.parametrize("zones", [(NEW_YORK, CHICAGO), (CHICAGO, NEW_YORK)])
def test_several_zones_wait_for_the_latest_morning(zones: tuple[ZoneInfo, ...]) -> None:
    # 23:00 in New York: Chicago's 08:00 (09:00 in New York) is the first common morning.
    result = _until(datetime(2026, 1, 5, 23, tzinfo=NEW_YORK), *zones)
    assert result == datetime(2026, 1, 6, 14, tzinfo=UTC)
    # 20:30 in Chicago is 21:30 in New York: already quiet there.
    assert _until(datetime(2026, 1, 5, 20, 30, tzinfo=CHICAGO), *zones) == result
    # 08:30 in New York is 07:30 in Chicago: still quiet there.
    assert _until(datetime(2026, 1, 6, 8, 30, tzinfo=NEW_YORK), *zones) == result
    assert quiet_until(datetime(2026, 1, 6, 9, tzinfo=NEW_YORK), zones, NIGHT, MORNING) is None


def test_zones_on_both_sides_of_the_date_line() -> None:
    # Kiritimati is a calendar day and an hour ahead of Pago Pago: Kiritimati's midnight is
    # Pago Pago's 23:00 the day before. The common morning is Pago Pago's 08:00.
    moment = datetime(2026, 1, 5, 10, tzinfo=UTC)
    for zones in ((KIRITIMATI, PAGO_PAGO), (PAGO_PAGO, KIRITIMATI)):
        result = _until(moment, *zones)
        assert result == datetime(2026, 1, 5, 19, tzinfo=UTC)
        # Compared in one zone, datetimes compare wall times: the dates are checked too.
        assert result.astimezone(PAGO_PAGO) == datetime(2026, 1, 5, 8, tzinfo=PAGO_PAGO)
        assert result.astimezone(KIRITIMATI) == datetime(2026, 1, 6, 9, tzinfo=KIRITIMATI)


def test_zones_without_a_common_morning_follow_the_first() -> None:
    # 13 quiet hours in zones 12 hours apart: one of them is always quiet.
    start, end = time(20, 0), time(9, 0)
    moment = datetime(2026, 1, 5, 10, tzinfo=UTC)  # 00:00 in Kiritimati, 12:00 in Johannesburg
    assert quiet_until(moment, [JOHANNESBURG], start, end) is None
    result = _until(moment, KIRITIMATI, JOHANNESBURG, start=start, end=end)
    assert result == datetime(2026, 1, 5, 19, tzinfo=UTC)  # 09:00 in Kiritimati
    # First zone not quiet: nothing to wait for in it.
    assert _until(moment, JOHANNESBURG, KIRITIMATI, start=start, end=end) == moment


def test_profile_zone_wins() -> None:
    assert recipient_zones("Asia/Tokyo", "+33612345678") == (ZoneInfo("Asia/Tokyo"),)
    assert recipient_zones("Europe/Paris", None) == (PARIS,)


@pytest.mark.parametrize(
    "profile_zone",
    [
        None,
        "",
        "Mars/Olympus_Mons",
        "europe/paris",
        "Europe",
        "../etc/passwd",
        "/etc/localtime",
        "localtime",
        "zone.tab",
        "Etc/Unknown",
        "Europe/Paris\x00",
        " Europe/Paris",
    ],
)
def test_unusable_profile_zone_falls_back_to_the_number(profile_zone: str | None) -> None:
    assert recipient_zones(profile_zone, "+33612345678") == (PARIS,)


@pytest.mark.parametrize(
    ("e164", "zones"),
    [
        ("+33612345678", (PARIS,)),
        ("+12125550123", (NEW_YORK,)),
        ("+13125550123", (CHICAGO,)),
        # Ofcom's fictional mobiles, which the rest of the service accepts.
        ("+447700900123", (ZoneInfo("Europe/London"),)),
    ],
)
def test_number_gives_its_zones(e164: str, zones: tuple[ZoneInfo, ...]) -> None:
    assert recipient_zones(None, e164) == zones


def test_number_spanning_several_zones_gives_them_all() -> None:
    zones = recipient_zones(None, "+79161234567")  # a Russian mobile: no region in the number
    assert ZoneInfo("Europe/Moscow") in zones
    assert ZoneInfo("Asia/Vladivostok") in zones


@pytest.mark.parametrize(
    "e164", [None, "", "garbage", "0612345678", "+999123", "+3361234567890123456", "+1 555"]
)
def test_nothing_usable_means_utc(e164: str | None) -> None:
    assert recipient_zones(None, e164) == (ZoneInfo("UTC"),)
    assert recipient_zones("Not/AZone", e164) == (ZoneInfo("UTC"),)


@settings(max_examples=50)
@given(st.one_of(st.none(), st.text(max_size=40)), st.one_of(st.none(), st.text(max_size=40)))
def test_recipient_zones_never_raises(profile_zone: str | None, e164: str | None) -> None:
    assert len(recipient_zones(profile_zone, e164)) >= 1


# Zones with the awkward cases: 30-minute and midnight transitions, a skipped day (Apia,
# 2011-12-30), odd offsets, southern-hemisphere summers, and none at all.
_ZONES = [
    ZoneInfo(key)
    for key in (
        "UTC",
        "Europe/Paris",
        "America/New_York",
        "America/St_Johns",
        "America/Santiago",
        "America/Havana",
        "Asia/Kolkata",
        "Australia/Lord_Howe",
        "Pacific/Chatham",
        "Pacific/Apia",
        "Pacific/Kiritimati",
        "Africa/Casablanca",
    )
]
# Days around DST changes, where the interesting cases are.
_TRANSITION_DAYS = [
    date(2011, 12, 30),
    date(2026, 3, 8),
    date(2026, 3, 15),
    date(2026, 3, 29),
    date(2026, 4, 5),
    date(2026, 9, 6),
    date(2026, 9, 27),
    date(2026, 10, 4),
    date(2026, 10, 25),
    date(2026, 11, 1),
]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_moments = st.one_of(
    # 1990 to 2040, to the microsecond.
    st.integers(min_value=631_152_000_000_000, max_value=2_208_988_800_000_000).map(
        lambda micros: _EPOCH + timedelta(microseconds=micros)
    ),
    st.builds(
        lambda day, seconds: datetime.combine(day, time(), UTC) + timedelta(seconds=seconds),
        st.sampled_from(_TRANSITION_DAYS),
        st.integers(min_value=-86_400, max_value=2 * 86_400),
    ),
)
# Whole and half hours in the small hours land in gaps and folds; any time at all for the rest.
_walls = st.one_of(
    st.builds(time, st.integers(0, 3), st.sampled_from([0, 30])),
    st.sampled_from([NIGHT, MORNING, time(13, 0), time(14, 0)]),
    st.times(),
)


def _check(moment: datetime, zones: Sequence[ZoneInfo], start: time, end: time) -> datetime | None:
    result = quiet_until(moment, zones, start, end)
    if result is None:
        assert not any(_quiet(moment, zone, start, end) for zone in zones)
    else:
        assert result.utcoffset() == timedelta(0)
        assert result >= moment
    return result


@settings(max_examples=150, deadline=None)
@given(_moments, st.sampled_from(_ZONES), _walls, _walls)
def test_result_is_the_first_moment_out_of_quiet_hours(
    moment: datetime, zone: ZoneInfo, start: time, end: time
) -> None:
    result = _check(moment, [zone], start, end)
    if result is not None:
        assert _quiet(moment, zone, start, end)
        assert not _quiet(result, zone, start, end)
        # Earliest: an instant sooner is still quiet.
        just_before = result - timedelta(microseconds=1)
        assert just_before < moment or _quiet(just_before, zone, start, end)


@settings(max_examples=50, deadline=None)
@given(_moments, st.lists(st.sampled_from(_ZONES), min_size=2, max_size=3), _walls, _walls)
def test_several_zones_clear_all_or_follow_the_first(
    moment: datetime, zones: list[ZoneInfo], start: time, end: time
) -> None:
    result = _check(moment, zones, start, end)
    if result is not None and any(_quiet(result, zone, start, end) for zone in zones):
        assert not _quiet(result, zones[0], start, end)
