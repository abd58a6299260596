"""Analytics over a period: how many messages, how they ended, their errors, segments and cost,
per category and per local day. PostgreSQL does the counting (repository); this folds its few
groups into the answer."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from app.analytics import repository
from app.analytics.exceptions import InvalidPeriod
from app.analytics.repository import Group, Window
from app.analytics.schemas import (
    Analytics,
    CategoryFigures,
    Cost,
    CurrencyAmount,
    Day,
    ErrorCount,
    Figures,
    Period,
    StatusCounts,
)
from app.core.errors import FieldError
from app.core.settings import Settings
from app.messages.categories import Category
from app.messages.status import STATUSES, Status
from app.twilio.errors import meaning_of

MAX_PERIOD = timedelta(days=400)
FINISHED = (Status.DELIVERED, Status.UNDELIVERED, Status.FAILED)
ERRORED = frozenset({Status.UNDELIVERED, Status.FAILED})
# What Twilio bills: messages it took. It does not bill failed ones; scheduled, queued,
# cancelled and suppressed ones never reached it.
BILLED = frozenset({Status.SENDING, Status.SENT, Status.DELIVERED, Status.UNDELIVERED})
_ONE_TICK = timedelta(microseconds=1)


@dataclass(slots=True)
class _Tally:
    counts: Counter[str] = field(default_factory=Counter)
    segments: int = 0
    errors: Counter[int | None] = field(default_factory=Counter)
    # Twilio's prices per currency as it spelled it, charges positive.
    reported: defaultdict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    estimated_segments: int = 0

    def add(self, group: Group, currency: str) -> None:
        self.counts[group.status] += group.messages
        self.segments += group.segments
        if group.status in ERRORED:
            self.errors[group.error_code or None] += group.messages
        # Retention keeps the unit Twilio named before it priced: a unit alone is no price.
        if group.price or group.unpriced_segments < group.segments:
            # A price Twilio gave without a unit is in the account's currency.
            self.reported[group.price_unit.upper() or currency] -= group.price
        if group.status in BILLED:
            self.estimated_segments += group.unpriced_segments

    @property
    def total(self) -> int:
        return sum(self.counts[status] for status in STATUSES)

    def status_counts(self) -> StatusCounts:
        return StatusCounts(**{status: self.counts[status] for status in STATUSES})

    def cost(self, settings: Settings) -> Cost:
        currency = settings.sms_price_currency
        reported = self.reported.get(currency, Decimal(0))
        estimated = self.estimated_segments * settings.sms_estimated_price_per_segment
        return Cost(
            currency=currency,
            reported=reported,
            estimated=estimated,
            estimated_segments=self.estimated_segments,
            total=reported + estimated,
            other_currencies=[
                CurrencyAmount(currency=unit, reported=amount)
                for unit, amount in sorted(self.reported.items())
                if unit != currency
            ],
        )

    def figures(self, settings: Settings) -> Figures:
        delivered, undelivered, failed = (self.counts[status] for status in FINISHED)
        finished = delivered + undelivered + failed
        return Figures(
            counts=self.status_counts(),
            total=self.total,
            delivery_rate=delivered / finished if finished else None,
            error_rate=(undelivered + failed) / finished if finished else None,
            errors=[
                ErrorCount(code=code, meaning=meaning_of(code), count=count)
                for code, count in sorted(
                    self.errors.items(), key=lambda item: (-item[1], item[0] is None, item[0] or 0)
                )
            ],
            segments=self.segments,
            cost=self.cost(settings),
        )


def window(
    start: datetime, end: datetime, category: Category | None, time_zone: str
) -> tuple[Window, list[date]]:
    """What the repository counts, and the local days of the period."""
    if end <= start:
        raise InvalidPeriod(
            "`to` must be after `from`",
            errors=[FieldError(field="query.to", message="must be after `from`", type="order")],
        )
    if end - start > MAX_PERIOD:
        raise InvalidPeriod(
            f"a period is at most {MAX_PERIOD.days} days",
            errors=[
                FieldError(
                    field="query.to",
                    message=f"at most {MAX_PERIOD.days} days after `from`",
                    type="too_long",
                )
            ],
        )
    zone = ZoneInfo(time_zone)
    first_day = start.astimezone(zone).date()
    last_day = (end - _ONE_TICK).astimezone(zone).date()
    days = list(_dates(first_day, last_day))
    # Retention's aggregates count by UTC day: those whose midnight is in [start, end).
    utc_start = start.astimezone(UTC)
    aggregated_from = utc_start.date() + (
        timedelta() if utc_start.time() == time() else timedelta(1)
    )
    aggregated_to = (end - _ONE_TICK).astimezone(UTC).date()
    has_aggregates = aggregated_from <= aggregated_to
    return (
        Window(
            start=start,
            end=end,
            category=category,
            first_day=first_day,
            day_starts=[datetime.combine(day, time(), zone).astimezone(UTC) for day in days],
            aggregated_from=aggregated_from if has_aggregates else None,
            aggregated_to=aggregated_to if has_aggregates else None,
        ),
        days,
    )


async def analytics(
    session: AsyncSession,
    settings: Settings,
    *,
    start: datetime,
    end: datetime,
    category: Category | None,
    time_zone: str,
) -> Analytics:
    scope, days = window(start, end, category, time_zone)
    groups = await repository.groups(session, scope)
    currency = settings.sms_price_currency

    overall = _Tally()
    per_category: defaultdict[str, _Tally] = defaultdict(_Tally)
    per_day: defaultdict[date, _Tally] = defaultdict(_Tally)
    for group in groups:
        if group.day is None:
            assert group.category is not None
            overall.add(group, currency)
            per_category[group.category].add(group, currency)
        else:
            per_day[group.day].add(group, currency)

    # An aggregated UTC day can lie past the last local day (west of UTC): it is shown too.
    shown = list(_dates(min([days[0], *per_day]), max([days[-1], *per_day])))
    categories = [category] if category is not None else list(Category)
    return Analytics(
        period=Period(from_=start, to=end, time_zone=time_zone, category=category),
        **dict(overall.figures(settings)),
        by_category=[
            CategoryFigures(category=name, **dict(per_category[name].figures(settings)))
            for name in categories
        ],
        daily=[_day(day, per_day[day], settings) for day in shown],
    )


def _day(day: date, tally: _Tally, settings: Settings) -> Day:
    return Day(
        date=day,
        counts=tally.status_counts(),
        total=tally.total,
        segments=tally.segments,
        cost=tally.cost(settings).total,
    )


def _dates(first: date, last: date) -> Iterable[date]:
    return (first + timedelta(days=n) for n in range((last - first).days + 1))
