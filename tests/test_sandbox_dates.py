"""The sandbox writes dates as Twilio does (RFC 2822), exactly as email.utils would."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

from app.twilio_sandbox.schemas import rfc2822


def test_utc_moments_are_written_as_email_utils_writes_them() -> None:
    draw = random.Random(20261122)
    start = datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)
    moments = [start + timedelta(seconds=draw.randrange(60 * 365 * 86400)) for _ in range(2000)]
    moments += [
        datetime(2024, 2, 29, 0, 0, 0, 999_999, tzinfo=UTC),
        datetime.min.replace(tzinfo=UTC),
    ]
    for moment in moments:
        assert rfc2822(moment) == format_datetime(moment, usegmt=False), moment


def test_other_zones_and_naive_moments_keep_their_offset() -> None:
    paris = datetime(2025, 1, 15, 23, 0, tzinfo=timezone(timedelta(hours=1)))
    naive = datetime(2025, 1, 15, 23, 0)  # noqa: DTZ001 - naive on purpose
    assert rfc2822(paris) == "Wed, 15 Jan 2025 23:00:00 +0100"
    assert rfc2822(naive) == "Wed, 15 Jan 2025 23:00:00 -0000"
    assert rfc2822(None) is None
