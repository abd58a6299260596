"""GET /api/sms/analytics against rows written straight into the tables, every figure checked
against a count made by hand below (not by the query under test).

The data, in 2030 (Europe/Paris is UTC+1 until 31 March 01:00 UTC, UTC+2 after). The period
of most tests is January to March in Paris: [2029-12-31 23:00Z, 2030-03-31 22:00Z).
(Paris 6): on 6 January in Paris; (Paris 2-1): on 1 February.

Stored messages (`#` numbers are referred to in the counts):

| # | created (UTC)          | category             | status      | seg | error | price          |
|---|------------------------|----------------------|-------------|-----|-------|----------------|
| 1 | 01-05 10:00            | booking_confirmation | delivered   | 1   |       | -0.0079 USD    |
| 2 | 01-05 11:00            | booking_confirmation | delivered   | 2   |       | -0.0158 USD    |
| 3 | 01-05 23:30 (Paris 6)  | booking_confirmation | delivered   | 1   |       | none           |
| 4 | 01-20 09:00            | marketing            | undelivered | 3   | 30003 | -0.0237 USD    |
| 5 | 01-20 09:05            | marketing            | failed      | 1   | 30008 | none           |
| 6 | 01-31 22:59            | payment              | sent        | 2   |       | none           |
| 7 | 01-31 23:00 (Paris 2-1)| payment              | delivered   | 1   |       | -0.0090 EUR    |
| 8 | 02-14 12:00            | marketing            | undelivered | 1   | 30003 | -0.0079 USD    |
| 9 | 02-14 12:00            | marketing            | undelivered | 1   | 30007 | none           |
|10 | 02-14 13:00            | security             | failed      | 1   | 21211 | none           |
|11 | 02-20 08:00            | transactional        | suppressed  | 2   |       | none           |
|12 | 02-20 08:00            | transactional        | cancelled   | 1   |       | none           |
|13 | 02-28 10:00            | ticket               | queued      | 1   |       | none           |
|14 | 02-28 10:00            | ticket               | scheduled   | 1   |       | none           |
|15 | 02-28 10:00            | ticket               | sending     | 4   |       | none           |
|16 | 03-31 21:59:59         | booking_reminder     | delivered   | 1   |       | -0.0079 usd    |
|17 | 03-31 22:00 (= `to`)   | booking_reminder     | delivered   | 1   |       | -0.0079 USD    |
|18 | 12-31 23:00 (= `from`) | booking_confirmation | delivered   | 1   |       | -0.0079 USD    |
|19 | 12-31 22:59:59         | transactional        | delivered   | 1   |       | -0.0079 USD    |
|20 | 03-10 10:00            | booking_reminder     | failed      | 1   | none  | none           |
|21 | 03-10 10:00            | booking_reminder     | delivered   | 1   |       | -0.0100 EUR    |
|22 | 03-15 10:00            | test                 | delivered   | 2   |       | none (unit USD)|

Retention's daily aggregates (UTC days, 2030 but A6 in 2029):

| # | day   | category             | status      | error | unit | msgs | seg | price   | unpriced |
|---|-------|----------------------|-------------|-------|------|------|-----|---------|----------|
|A1 | 01-10 | booking_confirmation | delivered   | 0     | USD  | 10   | 12  | -0.0948 | 0        |
|A2 | 01-10 | booking_confirmation | delivered   | 0     | ""   | 2    | 2   | 0       | 2        |
|A3 | 01-10 | marketing            | undelivered | 30003 | USD  | 3    | 3   | -0.0237 | 0        |
|A4 | 02-01 | payment              | failed      | 30008 | ""   | 4    | 4   | 0       | 4        |
|A5 | 03-31 | security             | delivered   | 0     | EUR  | 1    | 1   | -0.0090 | 0        |
|A6 | 12-31 | transactional        | delivered   | 0     | ""   | 100  | 100 | 0       | 100      |
|A7 | 04-01 | transactional        | delivered   | 0     | ""   | 50   | 50  | 0       | 50       |

The estimate is 0.01 per segment (settings below), for unpriced messages Twilio took
(sending, sent, delivered, undelivered); the account's currency is USD.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.analytics.models import MessageDailyStats
from app.auth.principal import Scope
from app.core.deps import get_sessionmaker
from app.core.settings import Settings
from app.main import create_app
from app.messages.models import Message
from tests.conftest import as_user

Json = dict[str, Any]
MakeKey = Callable[..., Awaitable[dict[str, str]]]

URL = "/api/sms/analytics"
PARIS_Q1 = {"from": "2030-01-01T00:00:00+01:00", "to": "2030-04-01T00:00:00+02:00"}
STATUSES = (
    "scheduled",
    "queued",
    "sending",
    "sent",
    "delivered",
    "undelivered",
    "failed",
    "cancelled",
    "suppressed",
)
CATEGORIES = (
    "transactional",
    "booking_confirmation",
    "booking_reminder",
    "status_update",
    "payment",
    "ticket",
    "security",
    "one_time_code",
    "marketing",
    "test",
)


def utc(month: int, day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    year = 2029 if month == 12 else 2030
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def message(
    number: int,
    created_at: datetime,
    category: str,
    status: str,
    segments: int,
    price: str | None = None,
    price_unit: str | None = None,
    *,
    error: int | None = None,
) -> Json:
    return {
        "id": uuid.uuid4(),
        "created_at": created_at,
        "category": category,
        "status": status,
        "segments": segments,
        "error_code": error,
        "price": Decimal(price) if price is not None else None,
        "price_unit": price_unit,
        "encoding": "GSM-7",
        "reference": f"#{number}",
        "requested_by": "api_key:analytics-test",
        "expires_at": created_at + timedelta(hours=10),
    }


MESSAGES = [
    message(1, utc(1, 5, 10), "booking_confirmation", "delivered", 1, "-0.0079", "USD"),
    message(2, utc(1, 5, 11), "booking_confirmation", "delivered", 2, "-0.0158", "USD"),
    message(3, utc(1, 5, 23, 30), "booking_confirmation", "delivered", 1),
    message(4, utc(1, 20, 9), "marketing", "undelivered", 3, "-0.0237", "USD", error=30003),
    message(5, utc(1, 20, 9, 5), "marketing", "failed", 1, error=30008),
    message(6, utc(1, 31, 22, 59), "payment", "sent", 2),
    message(7, utc(1, 31, 23), "payment", "delivered", 1, "-0.0090", "EUR"),
    message(8, utc(2, 14, 12), "marketing", "undelivered", 1, "-0.0079", "USD", error=30003),
    message(9, utc(2, 14, 12), "marketing", "undelivered", 1, error=30007),
    message(10, utc(2, 14, 13), "security", "failed", 1, error=21211),
    message(11, utc(2, 20, 8), "transactional", "suppressed", 2),
    message(12, utc(2, 20, 8), "transactional", "cancelled", 1),
    message(13, utc(2, 28, 10), "ticket", "queued", 1),
    message(14, utc(2, 28, 10), "ticket", "scheduled", 1),
    message(15, utc(2, 28, 10), "ticket", "sending", 4),
    message(16, utc(3, 31, 21, 59, 59), "booking_reminder", "delivered", 1, "-0.0079", "usd"),
    message(17, utc(3, 31, 22), "booking_reminder", "delivered", 1, "-0.0079", "USD"),
    message(18, utc(12, 31, 23), "booking_confirmation", "delivered", 1, "-0.0079", "USD"),
    message(19, utc(12, 31, 22, 59, 59), "transactional", "delivered", 1, "-0.0079", "USD"),
    message(20, utc(3, 10, 10), "booking_reminder", "failed", 1),
    message(21, utc(3, 10, 10), "booking_reminder", "delivered", 1, "-0.0100", "EUR"),
    message(22, utc(3, 15, 10), "test", "delivered", 2, None, "USD"),
]  # fmt: skip


def aggregate(
    day: date,
    category: str,
    status: str,
    error_code: int,
    price_unit: str,
    messages: int,
    segments: int,
    price: str,
    unpriced_segments: int,
) -> Json:
    return {
        "day": day,
        "category": category,
        "status": status,
        "error_code": error_code,
        "price_unit": price_unit,
        "messages": messages,
        "segments": segments,
        "price": Decimal(price),
        "unpriced_segments": unpriced_segments,
    }


JAN_10, FEB_1, MAR_31 = date(2030, 1, 10), date(2030, 2, 1), date(2030, 3, 31)
AGGREGATES = [
    aggregate(JAN_10, "booking_confirmation", "delivered", 0, "USD", 10, 12, "-0.0948", 0),
    aggregate(JAN_10, "booking_confirmation", "delivered", 0, "", 2, 2, "0", 2),
    aggregate(JAN_10, "marketing", "undelivered", 30003, "USD", 3, 3, "-0.0237", 0),
    aggregate(FEB_1, "payment", "failed", 30008, "", 4, 4, "0", 4),
    aggregate(MAR_31, "security", "delivered", 0, "EUR", 1, 1, "-0.0090", 0),
    aggregate(date(2029, 12, 31), "transactional", "delivered", 0, "", 100, 100, "0", 100),
    aggregate(date(2030, 4, 1), "transactional", "delivered", 0, "", 50, 50, "0", 50),
]  # fmt: skip


@pytest.fixture
def app(settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> FastAPI:
    priced = settings.model_copy(
        update={"sms_estimated_price_per_segment": Decimal("0.01"), "sms_price_currency": "USD"}
    )
    application = create_app(priced)
    application.dependency_overrides[get_sessionmaker] = lambda: sessionmaker
    return application


@pytest.fixture
async def rows(session: AsyncSession) -> None:
    # Set-based: one multi-row INSERT per table.
    await session.execute(insert(Message), MESSAGES)
    await session.execute(insert(MessageDailyStats), AGGREGATES)
    await session.commit()


def admin() -> dict[str, str]:
    # Made when used: a token made at import could expire before a long suite gets here.
    return as_user("analyst", admin=True)


async def analytics(client: httpx.AsyncClient, **params: str) -> Json:
    response = await client.get(URL, params=params, headers=admin())
    assert response.status_code == 200, response.text
    body: Json = with_money(response.json())
    return body


def with_money(body: Any) -> Any:
    """Amounts come as decimal strings: made Decimals, so 0.18960 == 0.1896."""
    if isinstance(body, list):
        return [with_money(item) for item in body]
    if not isinstance(body, dict):
        return body
    converted = {key: with_money(value) for key, value in body.items()}
    if isinstance(body.get("cost"), str):  # a day
        converted["cost"] = Decimal(body["cost"])
    if "estimated" in body:  # a cost
        for key in ("reported", "estimated", "total"):
            converted[key] = Decimal(body[key])
    if set(body) == {"currency", "reported"}:  # another currency
        converted["reported"] = Decimal(body["reported"])
    return converted


def counts(**given: int) -> dict[str, int]:
    assert set(given) <= set(STATUSES)
    return {status: given.get(status, 0) for status in STATUSES}


def cost(
    reported: str = "0",
    estimated_segments: int = 0,
    total: str | None = None,
    **others: str,
) -> Json:
    estimated = Decimal("0.01") * estimated_segments
    return {
        "currency": "USD",
        "reported": Decimal(reported),
        "estimated": estimated,
        "estimated_segments": estimated_segments,
        "total": Decimal(total) if total is not None else Decimal(reported) + estimated,
        "other_currencies": [
            {"currency": unit, "reported": Decimal(amount)} for unit, amount in others.items()
        ],
    }


def error(code: int | None, meaning: str | None, count: int) -> Json:
    return {"code": code, "meaning": meaning, "count": count}


def figures(
    counted: dict[str, int],
    *,
    total: int,
    delivery_rate: float | None,
    error_rate: float | None,
    errors: list[Json],
    segments: int,
    costs: Json,
) -> Json:
    return {
        "counts": counted,
        "total": total,
        "delivery_rate": delivery_rate,
        "error_rate": error_rate,
        "errors": errors,
        "segments": segments,
        "cost": costs,
    }


NOTHING = figures(
    counts(),
    total=0,
    delivery_rate=None,
    error_rate=None,
    errors=[],
    segments=0,
    costs=cost(),
)


def day(when: date, counted: dict[str, int], segments: int, day_cost: str) -> Json:
    return {
        "date": when.isoformat(),
        "counts": counted,
        "total": sum(counted.values()),
        "segments": segments,
        "cost": Decimal(day_cost),
    }


def series(first: date, last: date, busy: dict[date, Json]) -> list[Json]:
    """Every day from `first` to `last`: the busy ones as given, zeros elsewhere."""
    days = []
    when = first
    while when <= last:
        days.append(busy.pop(when, day(when, counts(), 0, "0")))
        when += timedelta(days=1)
    assert busy == {}, "a busy day outside the series"
    return days


# By category, January to March in Paris (every message of the table but #17 and #19, and
# aggregates A1 to A5).
BY_CATEGORY = {
    # 11 suppressed (2 seg), 12 cancelled (1 seg): nothing finished, nothing billed.
    "transactional": figures(
        counts(suppressed=1, cancelled=1),
        total=2,
        delivery_rate=None,
        error_rate=None,
        errors=[],
        segments=3,
        costs=cost(),
    ),
    # 1, 2, 3, 18 delivered (1+2+1+1 seg), A1 (10 msgs, 12 seg), A2 (2 msgs, 2 seg unpriced).
    # Reported 0.0079 + 0.0158 + 0.0079 + 0.0948; estimated #3 (1 seg) + A2 (2 seg).
    "booking_confirmation": figures(
        counts(delivered=16),
        total=16,
        delivery_rate=1.0,
        error_rate=0.0,
        errors=[],
        segments=19,
        costs=cost("0.1264", 3),
    ),
    # 16 delivered (0.0079 "usd"), 20 failed without a code, 21 delivered (0.0100 EUR).
    "booking_reminder": figures(
        counts(delivered=2, failed=1),
        total=3,
        delivery_rate=2 / 3,
        error_rate=1 / 3,
        errors=[error(None, None, 1)],
        segments=3,
        costs=cost("0.0079", EUR="0.0100"),
    ),
    "status_update": NOTHING,
    # 6 sent (2 seg, unpriced: estimated), 7 delivered (0.0090 EUR), A4 4 failed 30008 (not
    # billed).
    "payment": figures(
        counts(sent=1, delivered=1, failed=4),
        total=6,
        delivery_rate=0.2,
        error_rate=0.8,
        errors=[error(30008, "unknown error", 4)],
        segments=7,
        costs=cost("0", 2, EUR="0.0090"),
    ),
    # 13 queued, 14 scheduled (not billed), 15 sending (4 seg, estimated).
    "ticket": figures(
        counts(queued=1, scheduled=1, sending=1),
        total=3,
        delivery_rate=None,
        error_rate=None,
        errors=[],
        segments=6,
        costs=cost("0", 4),
    ),
    # 10 failed 21211, A5 delivered (0.0090 EUR).
    "security": figures(
        counts(delivered=1, failed=1),
        total=2,
        delivery_rate=0.5,
        error_rate=0.5,
        errors=[error(21211, "invalid To number", 1)],
        segments=2,
        costs=cost("0", EUR="0.0090"),
    ),
    "one_time_code": NOTHING,
    # 4, 8 undelivered 30003 (0.0237, 0.0079), 9 undelivered 30007 (1 seg estimated),
    # 5 failed 30008, A3 3 undelivered 30003 (0.0237).
    "marketing": figures(
        counts(undelivered=6, failed=1),
        total=7,
        delivery_rate=0.0,
        error_rate=1.0,
        errors=[
            error(30003, "unreachable handset", 5),
            error(30007, "carrier filtering", 1),
            error(30008, "unknown error", 1),
        ],
        segments=9,
        costs=cost("0.0553", 1),
    ),
    # 22 delivered, 2 seg, a unit but no price yet: estimated.
    "test": figures(
        counts(delivered=1),
        total=1,
        delivery_rate=1.0,
        error_rate=0.0,
        errors=[],
        segments=2,
        costs=cost("0", 2),
    ),
}

# All categories: delivered 8 stored + 13 aggregated, undelivered 3 + 3, failed 3 + 4: 34
# finished. Errors: 30003 #4 #8 A3(3), 30008 #5 A4(4), 30007 #9, 21211 #10, no code #20.
# Reported USD 0.0711 stored + 0.1185 aggregated; EUR #7 #21 A5; estimated segments:
# #3 1, #6 2, #9 1, #15 4, #22 2, A2 2.
OVERALL = figures(
    counts(
        delivered=21,
        undelivered=6,
        failed=7,
        sent=1,
        sending=1,
        queued=1,
        scheduled=1,
        cancelled=1,
        suppressed=1,
    ),
    total=40,
    delivery_rate=21 / 34,
    error_rate=13 / 34,
    errors=[
        error(30003, "unreachable handset", 5),
        error(30008, "unknown error", 5),
        error(21211, "invalid To number", 1),
        error(30007, "carrier filtering", 1),
        error(None, None, 1),
    ],
    segments=51,
    costs=cost("0.1896", 12, total="0.3096", EUR="0.0280"),
)

# Paris days with something on them (others are zeros).
PARIS_DAYS = {
    # 18 at `from` exactly: 00:00 in Paris.
    date(2030, 1, 1): day(date(2030, 1, 1), counts(delivered=1), 1, "0.0079"),
    date(2030, 1, 5): day(date(2030, 1, 5), counts(delivered=2), 3, "0.0237"),
    # 3 at 23:30 UTC on the 5th is 00:30 on the 6th in Paris; unpriced: 1 seg estimated.
    date(2030, 1, 6): day(date(2030, 1, 6), counts(delivered=1), 1, "0.01"),
    # A1, A2, A3: 0.0948 + 0.0237 reported, 2 seg estimated.
    date(2030, 1, 10): day(date(2030, 1, 10), counts(delivered=12, undelivered=3), 17, "0.1385"),
    date(2030, 1, 20): day(date(2030, 1, 20), counts(undelivered=1, failed=1), 4, "0.0237"),
    date(2030, 1, 31): day(date(2030, 1, 31), counts(sent=1), 2, "0.02"),
    # 7 (23:00 UTC on the 31st, EUR: left out of the day's cost), A4 (failed: no estimate).
    date(2030, 2, 1): day(date(2030, 2, 1), counts(delivered=1, failed=4), 5, "0"),
    date(2030, 2, 14): day(date(2030, 2, 14), counts(undelivered=2, failed=1), 3, "0.0179"),
    date(2030, 2, 20): day(date(2030, 2, 20), counts(suppressed=1, cancelled=1), 3, "0"),
    date(2030, 2, 28): day(date(2030, 2, 28), counts(queued=1, scheduled=1, sending=1), 6, "0.04"),
    date(2030, 3, 10): day(date(2030, 3, 10), counts(delivered=1, failed=1), 2, "0"),
    date(2030, 3, 15): day(date(2030, 3, 15), counts(delivered=1), 2, "0.02"),
    # 16 at 23:59:59 in Paris (summer time) and A5 (EUR).
    date(2030, 3, 31): day(date(2030, 3, 31), counts(delivered=2), 2, "0.0079"),
}  # fmt: skip


async def test_every_figure_of_a_quarter_in_paris(client: httpx.AsyncClient, rows: None) -> None:
    body = await analytics(client, **PARIS_Q1, time_zone="Europe/Paris")

    assert body["period"] == {
        "from": "2030-01-01T00:00:00+01:00",
        "to": "2030-04-01T00:00:00+02:00",
        "time_zone": "Europe/Paris",
        "category": None,
    }
    assert {key: body[key] for key in OVERALL} == OVERALL
    assert [entry["category"] for entry in body["by_category"]] == list(CATEGORIES)
    for entry in body["by_category"]:
        category = entry.pop("category")
        assert entry == BY_CATEGORY[category], category
    assert len(body["daily"]) == 90  # 31 + 28 + 31 days
    assert body["daily"] == series(date(2030, 1, 1), date(2030, 3, 31), dict(PARIS_DAYS))


async def test_one_category(client: httpx.AsyncClient, rows: None) -> None:
    body = await analytics(client, **PARIS_Q1, time_zone="Europe/Paris", category="marketing")

    assert body["period"]["category"] == "marketing"
    marketing = BY_CATEGORY["marketing"]
    assert {key: body[key] for key in marketing} == marketing
    assert body["by_category"] == [{"category": "marketing", **marketing}]
    assert body["daily"] == series(
        date(2030, 1, 1),
        date(2030, 3, 31),
        {
            # A3: 3 undelivered, 0.0237 reported.
            date(2030, 1, 10): day(date(2030, 1, 10), counts(undelivered=3), 3, "0.0237"),
            # 4 (0.0237), 5 failed.
            date(2030, 1, 20): day(date(2030, 1, 20), counts(undelivered=1, failed=1), 4, "0.0237"),
            # 8 (0.0079), 9 unpriced: 1 seg estimated.
            date(2030, 2, 14): day(date(2030, 2, 14), counts(undelivered=2), 2, "0.0179"),
        },
    )


async def test_the_same_days_in_utc_by_default(client: httpx.AsyncClient, rows: None) -> None:
    body = await analytics(client, **{"from": "2030-01-05T00:00:00Z", "to": "2030-01-07T00:00:00Z"})

    assert body["period"]["time_zone"] == "UTC"
    # 1, 2 and 3 (23:30 UTC) all on the 5th; 3 is unpriced (0.01 estimated).
    assert body["daily"] == [
        day(date(2030, 1, 5), counts(delivered=3), 4, "0.0337"),
        day(date(2030, 1, 6), counts(), 0, "0"),
    ]
    assert body["counts"] == counts(delivered=3)


async def test_from_is_included_and_to_excluded(client: httpx.AsyncClient, rows: None) -> None:
    # 1 at 10:00 exactly, 2 at 11:00 exactly.
    body = await analytics(client, **{"from": "2030-01-05T10:00:00Z", "to": "2030-01-05T11:00:00Z"})

    assert body["total"] == 1
    assert body["segments"] == 1
    assert body["cost"] == cost("0.0079")
    assert body["daily"] == [day(date(2030, 1, 5), counts(delivered=1), 1, "0.0079")]

    # One microsecond either side.
    body = await analytics(
        client, **{"from": "2030-01-05T10:00:00.000001Z", "to": "2030-01-05T11:00:00.000001Z"}
    )

    assert body["total"] == 1
    assert body["segments"] == 2
    assert body["cost"] == cost("0.0158")


async def test_aggregates_count_by_their_utc_midnight(
    client: httpx.AsyncClient, rows: None
) -> None:
    # Only A1, A2 and A3 (2030-01-10) in this second.
    body = await analytics(client, **{"from": "2030-01-10T00:00:00Z", "to": "2030-01-10T00:00:01Z"})

    assert body == {
        "period": {
            "from": "2030-01-10T00:00:00Z",
            "to": "2030-01-10T00:00:01Z",
            "time_zone": "UTC",
            "category": None,
        },
        **figures(
            counts(delivered=12, undelivered=3),
            total=15,
            delivery_rate=12 / 15,
            error_rate=3 / 15,
            errors=[error(30003, "unreachable handset", 3)],
            segments=17,
            costs=cost("0.1185", 2),
        ),
        "by_category": [
            {
                "category": category,
                **{
                    "booking_confirmation": figures(
                        counts(delivered=12),
                        total=12,
                        delivery_rate=1.0,
                        error_rate=0.0,
                        errors=[],
                        segments=14,
                        costs=cost("0.0948", 2),
                    ),
                    "marketing": figures(
                        counts(undelivered=3),
                        total=3,
                        delivery_rate=0.0,
                        error_rate=1.0,
                        errors=[error(30003, "unreachable handset", 3)],
                        segments=3,
                        costs=cost("0.0237"),
                    ),
                }.get(category, NOTHING),
            }
            for category in CATEGORIES
        ],
        "daily": [day(date(2030, 1, 10), counts(delivered=12, undelivered=3), 17, "0.1385")],
    }

    # From one microsecond later, the day's midnight is not in the period: not counted.
    body = await analytics(
        client, **{"from": "2030-01-10T00:00:00.000001Z", "to": "2030-01-11T00:00:00Z"}
    )

    assert body["total"] == 0
    assert body["daily"] == [day(date(2030, 1, 10), counts(), 0, "0")]


async def test_an_aggregated_utc_day_past_the_last_local_day_is_shown(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    # New York, 10 January 2030: [05:00Z on the 10th, 05:00Z on the 11th). The midnight of
    # UTC's 11th is in it, the 10th's is not.
    await session.execute(
        insert(MessageDailyStats),
        [
            aggregate(date(2030, 1, 10), "payment", "delivered", 0, "USD", 5, 5, "-0.05", 0),
            aggregate(date(2030, 1, 11), "payment", "delivered", 0, "USD", 2, 3, "-0.03", 0),
        ],
    )
    await session.execute(
        insert(Message),
        [message(1, datetime(2030, 1, 11, 4, 59, tzinfo=UTC), "payment", "sent", 1)],
    )
    await session.commit()

    body = await analytics(
        client,
        **{"from": "2030-01-10T00:00:00-05:00", "to": "2030-01-11T00:00:00-05:00"},
        time_zone="America/New_York",
    )

    assert body["counts"] == counts(delivered=2, sent=1)
    assert body["cost"] == cost("0.03", 1)
    assert body["daily"] == [
        # The stored message: 23:59 on the 10th in New York.
        day(date(2030, 1, 10), counts(sent=1), 1, "0.01"),
        # The aggregate, under its UTC date.
        day(date(2030, 1, 11), counts(delivered=2), 3, "0.03"),
    ]


async def test_a_currency_without_a_price_is_no_price(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    # Twilio names the unit before it knows the price; retention keeps that unit.
    await session.execute(
        insert(MessageDailyStats),
        [aggregate(JAN_10, "payment", "delivered", 0, "EUR", 2, 3, "0", 3)],
    )
    await session.execute(
        insert(Message), [message(1, utc(1, 10, 12), "payment", "delivered", 1, None, "EUR")]
    )
    await session.commit()

    body = await analytics(client, **{"from": "2030-01-10T00:00:00Z", "to": "2030-01-11T00:00:00Z"})

    assert body["cost"] == cost("0", 4)  # 3 + 1 segments estimated, no EUR reported


# Odd offsets, 30-minute DST (Lord Howe), DST ending at midnight (Santiago, 7 April 2030),
# Paris's change on 31 March, the extremes (+14, -11).
@pytest.mark.parametrize(
    "zone",
    [
        "Europe/Paris",
        "America/Santiago",
        "Australia/Lord_Howe",
        "Asia/Kathmandu",
        "America/St_Johns",
        "Pacific/Kiritimati",
        "Pacific/Pago_Pago",
    ],
)
async def test_each_message_is_on_its_local_day(
    client: httpx.AsyncClient, session: AsyncSession, zone: str
) -> None:
    local = ZoneInfo(zone)
    start = datetime(2030, 3, 22, tzinfo=local)
    end = datetime(2030, 4, 9, tzinfo=local)
    draw = random.Random(zone)
    moments = [
        datetime(2030, 3, 20, tzinfo=UTC) + timedelta(seconds=draw.randrange(23 * 86400))
        for _ in range(300)
    ]
    # Each local midnight, and the microsecond before it.
    for n in range(20):
        midnight = datetime.combine(date(2030, 3, 21) + timedelta(days=n), time(), local)
        moments += [midnight, midnight - timedelta(microseconds=1)]
    await session.execute(
        insert(Message),
        [message(n, moment, "transactional", "delivered", 1) for n, moment in enumerate(moments)],
    )
    await session.commit()

    body = await analytics(
        client, **{"from": start.isoformat(), "to": end.isoformat()}, time_zone=zone
    )

    # Python's own calendar, message by message.
    expected = Counter(
        moment.astimezone(local).date() for moment in moments if start <= moment < end
    )
    assert body["total"] == sum(expected.values())
    assert [(day["date"], day["total"]) for day in body["daily"]] == [
        (
            (date(2030, 3, 22) + timedelta(days=n)).isoformat(),
            expected[date(2030, 3, 22) + timedelta(days=n)],
        )
        for n in range(18)
    ]


async def test_an_empty_period_has_every_figure_at_zero(
    client: httpx.AsyncClient, rows: None
) -> None:
    body = await analytics(
        client,
        **{"from": "2030-06-01T00:00:00+02:00", "to": "2030-06-03T00:00:00+02:00"},
        time_zone="Europe/Paris",
    )

    assert {key: body[key] for key in NOTHING} == NOTHING
    assert body["by_category"] == [{"category": category, **NOTHING} for category in CATEGORIES]
    assert body["daily"] == [
        day(date(2030, 6, 1), counts(), 0, "0"),
        day(date(2030, 6, 2), counts(), 0, "0"),
    ]


async def test_a_period_of_400_days_is_the_longest(client: httpx.AsyncClient, rows: None) -> None:
    body = await analytics(client, **{"from": "2029-12-01T00:00:00Z", "to": "2031-01-05T00:00:00Z"})

    # Every stored message (22) and every aggregate: A1 to A5 (20), A6 (100), A7 (50).
    assert body["total"] == 22 + 20 + 100 + 50
    assert len(body["daily"]) == 400

    response = await client.get(
        URL,
        params={"from": "2029-12-01T00:00:00Z", "to": "2031-01-05T00:00:00.000001Z"},
        headers=admin(),
    )

    problem = assert_problem(response, 422, "invalid_period")
    assert problem["errors"] == [
        {"field": "query.to", "message": "at most 400 days after `from`", "type": "too_long"}
    ]


def assert_problem(response: httpx.Response, status: int, code: str) -> Json:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: Json = response.json()
    assert problem["code"] == code
    assert problem["status"] == status
    return problem


JAN_1, JAN_2 = "2030-01-01T00:00:00Z", "2030-01-02T00:00:00Z"


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({"from": JAN_2, "to": JAN_2}, "invalid_period", "query.to"),
        ({"from": JAN_2, "to": JAN_1}, "invalid_period", "query.to"),
        ({"to": JAN_2}, "validation_error", "query.from"),
        ({"from": JAN_1}, "validation_error", "query.to"),
        ({"from": "2030-01-01T00:00:00", "to": JAN_2}, "validation_error", "query.from"),
        ({"from": "yesterday", "to": JAN_2}, "validation_error", "query.from"),
        ({"from": JAN_1, "to": "2230-01-02T00:00:00Z"}, "validation_error", "query.to"),
        (
            {"from": JAN_1, "to": JAN_2, "time_zone": "Mars/Olympus"},
            "validation_error",
            "query.time_zone",
        ),
        (
            {"from": JAN_1, "to": JAN_2, "category": "spam"},
            "validation_error",
            "query.category",
        ),
    ],
)  # fmt: skip
async def test_bad_input_is_422(
    client: httpx.AsyncClient, params: dict[str, str], code: str, field: str
) -> None:
    response = await client.get(URL, params=params, headers=admin())

    problem = assert_problem(response, 422, code)
    assert [error["field"] for error in problem["errors"]] == [field]


async def test_without_credentials_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get(URL, params=PARIS_Q1)

    assert_problem(response, 401, "missing_credentials")


async def test_a_user_without_admin_may_not_read_analytics(
    client: httpx.AsyncClient, rows: None
) -> None:
    response = await client.get(URL, params=PARIS_Q1, headers=as_user("curious"))

    assert_problem(response, 403, "missing_scope")


async def test_a_key_without_sms_read_may_not_read_analytics(
    client: httpx.AsyncClient, make_api_key: MakeKey, rows: None
) -> None:
    sender = await make_api_key(Scope.SMS_SEND, Scope.USERS_WRITE)

    response = await client.get(URL, params=PARIS_Q1, headers=sender)

    assert_problem(response, 403, "missing_scope")


async def test_a_key_with_sms_read_reads_analytics(
    client: httpx.AsyncClient, make_api_key: MakeKey, rows: None
) -> None:
    reader = await make_api_key(Scope.SMS_READ)

    response = await client.get(URL, params=PARIS_Q1, headers=reader)

    assert response.status_code == 200, response.text
    assert response.json()["total"] == 40
