"""Constrained types shared by several features' schemas."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from zoneinfo import available_timezones

from pydantic import AfterValidator, AwareDatetime, Field, StringConstraints

USER_ID_MAX_LENGTH = 255
# Printable, without whitespace or control characters (PostgreSQL cannot store NUL).
USER_ID_PATTERN = r"^[^\s\x00-\x1f\x7f]+$"

# The platform's opaque user id (the JWT's `sub`).
UserId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=USER_ID_MAX_LENGTH, pattern=USER_ID_PATTERN),
]

CountryCode = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z]{2}$", to_upper=True),
    Field(description="ISO 3166-1 alpha-2 country, for numbers written without +country code."),
]

PhoneInput = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64),
    Field(
        description="Any reasonable writing of a number: `+1 (415) 555-2671`, "
        "`00 44 7700 900123`, or a national number with `country`.",
        examples=["+1 (415) 555-2671"],
    ),
]

_LOCALE_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z]{4})?(-([A-Za-z]{2}|[0-9]{3}))?$"


def _canonical_locale(value: str) -> str:
    parts = value.split("-")
    canonical = [parts[0].lower()]
    for part in parts[1:]:
        canonical.append(part.title() if len(part) == 4 else part.upper())
    return "-".join(canonical)


Locale = Annotated[
    str,
    StringConstraints(max_length=35, pattern=_LOCALE_PATTERN),
    AfterValidator(_canonical_locale),
    Field(description="BCP 47 language tag, e.g. `en`, `fr-CA`, `pt-BR`.", examples=["en-US"]),
]

# Without "localtime" and "Factory": the one means the server's own zone, the other none.
_TIME_ZONES = frozenset(available_timezones()) - {"localtime", "Factory"}


def _known_time_zone(value: str) -> str:
    if value not in _TIME_ZONES:
        raise ValueError("not an IANA time zone such as `Europe/Paris`")
    return value


TimeZone = Annotated[
    str,
    StringConstraints(max_length=64),
    AfterValidator(_known_time_zone),
    Field(description="IANA time zone, e.g. `America/New_York`.", examples=["Europe/Paris"]),
]


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL: refuse it here rather than fail in the database.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]

_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def plausible_moment(value: datetime) -> datetime:
    # Far-off years overflow PostgreSQL's and Python's arithmetic; no message lives there.
    if not _EARLIEST <= value < _LATEST:
        raise ValueError("must be between the years 2000 and 2100")
    return value


Moment = Annotated[
    AwareDatetime,
    AfterValidator(plausible_moment),
    Field(description="ISO 8601 with a time zone, e.g. `2026-11-21T09:00:00+01:00`."),
]
