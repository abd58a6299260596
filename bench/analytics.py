"""GET /api/sms/analytics at a million messages, beside the cheapest look at the same rows, in
one run:

- 1,000,000 messages spread evenly over 12 months (one INSERT ... SELECT generate_series),
  realistic statuses, categories, error codes, prices in two currencies, 1-3 segments, bodies;
  and the 12 months before them as retention's daily aggregates (29,200 rows);
- the request (in-process ASGI, real PostgreSQL; daily series in Europe/Paris) for the last
  1, 3 and 12 months and for the 12 aggregated months, median of `--runs`;
- baseline: `SELECT count(*) FROM messages WHERE created_at in the period`, the least any
  answer over those rows costs;
- the same requests without `ix_messages_analytics`, and what the index costs writes (100,000
  rows inserted with and without it) and disk.

    .venv/bin/python -m bench.analytics [--messages 1000000] [--runs 7]

Uses BENCH_DATABASE_URL / BENCH_REDIS_URL (default: the test servers), in a database of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from asgi_lifespan import LifespanManager
from sqlalchemy import Engine, event

from app.auth import api_keys
from app.auth.principal import Scope
from app.core.database import create_engine, create_sessionmaker, transaction
from app.core.settings import Settings
from app.main import create_app
from app.messages.categories import Category
from bench.support import bench_servers

KEPT_FROM = datetime(2025, 12, 1, tzinfo=UTC)
KEPT_TO = datetime(2026, 12, 1, tzinfo=UTC)
AGGREGATED_FROM = datetime(2024, 12, 1, tzinfo=UTC)
PERIODS = {
    "1 month": (datetime(2026, 11, 1, tzinfo=UTC), KEPT_TO),
    "3 months": (datetime(2026, 9, 1, tzinfo=UTC), KEPT_TO),
    "12 months": (KEPT_FROM, KEPT_TO),
    "12 aggregated months": (AGGREGATED_FROM, KEPT_FROM),
}
TIME_ZONE = "Europe/Paris"
CATEGORIES = [category.value for category in Category]

# $1 rows, evenly from $2 over $3, in the categories $4; statuses, errors and prices drawn
# from random() after a fixed seed. Column for column what the service writes (bodies,
# encrypted numbers, SIDs), so the table has its real width.
INSERT_MESSAGES = """
INSERT INTO messages (
    id, to_encrypted, to_index, to_region, sender, body, category, status, twilio_status,
    twilio_sid, error_code, encoding, segments, price, price_unit, requested_by, attempts,
    expires_at, final_at, created_at, updated_at, next_attempt_at, price_checked_at)
SELECT gen_random_uuid(),
       decode(md5(i::text) || md5((i + 1)::text), 'hex'),
       decode(md5(i::text) || md5((i + 7)::text), 'hex'),
       'US', '+15005550006',
       'Your booking #' || i || ' is confirmed for tomorrow at 10:00. Reply STOP to opt out.',
       ($4::text[])[1 + (r1 * 10)::int % 10],
       status, status, 'SM' || md5(i || '@' || $2::text),
       CASE WHEN status = 'undelivered' THEN (ARRAY[30003, 30005, 30007])[1 + (r2 * 3)::int % 3]
            WHEN status = 'failed' THEN (ARRAY[30008, 21211, 21614])[1 + (r2 * 3)::int % 3]
       END,
       'GSM-7', segments,
       CASE WHEN status IN ('delivered', 'undelivered') AND r2 < 0.85 THEN -0.0079 * segments END,
       CASE WHEN status IN ('delivered', 'undelivered') AND r2 < 0.85
            THEN CASE WHEN r2 < 0.84 THEN 'USD' ELSE 'EUR' END END,
       'api_key:bench', 1, at + interval '10 hours', at + interval '5 seconds', at, at, at, at
FROM (
    SELECT i, r1, r2, $2::timestamptz + i * ($3::interval / $1) AS at,
           1 + (r3 * 3)::int % 3 AS segments,
           CASE WHEN r4 < 0.80 THEN 'delivered' WHEN r4 < 0.84 THEN 'undelivered'
                WHEN r4 < 0.87 THEN 'failed' WHEN r4 < 0.92 THEN 'sent'
                WHEN r4 < 0.94 THEN 'cancelled' WHEN r4 < 0.97 THEN 'suppressed'
                WHEN r4 < 0.98 THEN 'sending' WHEN r4 < 0.99 THEN 'queued'
                ELSE 'scheduled' END AS status
    FROM (SELECT i, random() AS r1, random() AS r2, random() AS r3, random() AS r4
          FROM generate_series(0, $1 - 1) AS i) AS drawn
) AS message
"""

# What retention keeps of a year of deleted messages: per UTC day, category, status, error
# and currency.
INSERT_AGGREGATES = """
INSERT INTO message_daily_stats (
    day, category, status, error_code, price_unit, messages, segments, price, unpriced_segments)
SELECT day::date, category, status, error_code, price_unit, messages, messages * 2,
       CASE WHEN price_unit = '' THEN 0 ELSE -0.0079 * messages * 2 END,
       CASE WHEN price_unit = '' THEN messages * 2 ELSE 0 END
FROM generate_series($1::timestamptz, $2::timestamptz - interval '1 day', interval '1 day')
         AS day,
     unnest($3::text[]) AS category,
     (VALUES ('delivered', 0, 'USD', 200), ('delivered', 0, 'EUR', 3),
             ('delivered', 0, '', 30), ('undelivered', 30003, 'USD', 10),
             ('failed', 30008, '', 8), ('sent', 0, '', 12), ('cancelled', 0, '', 5),
             ('suppressed', 0, '', 6)) AS kind(status, error_code, price_unit, messages)
"""


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def timed(call: Callable[[], Awaitable[Any]], runs: int) -> float:
    await call()  # warm-up: caches, plans
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return median_ms(samples)


async def fill(dsn: str, messages: int) -> dict[str, float]:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("SELECT setseed(0.2026)")
        started = time.perf_counter()
        await connection.execute(
            INSERT_MESSAGES, messages, KEPT_FROM, KEPT_TO - KEPT_FROM, CATEGORIES
        )
        inserted = time.perf_counter() - started
        await connection.execute(INSERT_AGGREGATES, AGGREGATED_FROM, KEPT_FROM, CATEGORIES)
        # Index-only scans need the visibility map: autovacuum keeps it in a live database.
        await connection.execute("VACUUM ANALYZE messages")
        await connection.execute("VACUUM ANALYZE message_daily_stats")
        sizes = await connection.fetchrow(
            "SELECT pg_relation_size('messages') AS heap, "
            "pg_relation_size('ix_messages_analytics') AS analytics_index, "
            "pg_indexes_size('messages') AS all_indexes"
        )
    finally:
        await connection.close()
    assert sizes is not None
    return {
        f"setup: insert {messages:,} messages, s": inserted,
        "disk: messages table, MB": sizes["heap"] / 2**20,
        "disk: ix_messages_analytics, MB": sizes["analytics_index"] / 2**20,
        "disk: all indexes of messages, MB": sizes["all_indexes"] / 2**20,
    }


def scans(plan: dict[str, Any]) -> list[str]:
    """The plan's scans of messages: kind, index, heap fetches."""
    found = []
    if plan.get("Relation Name") == "messages":
        fetches = plan.get("Heap Fetches")
        found.append(
            f"{plan['Node Type']}"
            + (f" using {plan['Index Name']}" if "Index Name" in plan else "")
            + (f" (heap fetches {fetches})" if fetches is not None else "")
        )
    for child in plan.get("Plans", []):
        found += scans(child)
    return found


async def requests(
    database_url: str, redis_url: str, runs: int, label: str
) -> tuple[dict[str, float], dict[str, str]]:
    settings = Settings(
        _env_file=None, database_url=database_url, redis_url=redis_url, log_level="WARNING"
    )
    engine = create_engine(settings)
    async with transaction(create_sessionmaker(engine)) as session:
        key = (await api_keys.create_key(session, "bench", [Scope.SMS_READ])).secret
    await engine.dispose()

    figures: dict[str, float] = {}
    plans: dict[str, str] = {}
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        # The analytics statement as the app sends it, to EXPLAIN it afterwards.
        sent: list[tuple[str, Any]] = []

        def capture(*args: Any) -> None:
            statement, parameters = args[2], args[3]
            if "width_bucket" in statement:
                sent.append((statement, parameters))

        event.listen(Engine, "before_cursor_execute", capture)
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://bench",
            headers={"Authorization": f"Bearer {key}"},
            timeout=300,
        ) as client:
            for name, (start, end) in PERIODS.items():
                params = {"from": start.isoformat(), "to": end.isoformat(), "time_zone": TIME_ZONE}

                async def call(params: dict[str, str] = params) -> httpx.Response:
                    response = await client.get("/api/sms/analytics", params=params)
                    assert response.status_code == 200, response.text
                    return response

                figures[f"{name}: GET /api/sms/analytics, {label}, ms"] = await timed(call, runs)
                sent.clear()
                total = (await call()).json()["total"]
                figures[f"{name}: messages counted"] = total
                statement, parameters = sent[-1]
                plans[f"{name}, {label}"] = await explain(database_url, statement, parameters)
        event.remove(Engine, "before_cursor_execute", capture)
    return figures, plans


async def explain(database_url: str, statement: str, parameters: Any) -> str:
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await connection.execute("SET jit = off")
        raw = await connection.fetchval(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, *parameters
        )
    finally:
        await connection.close()
    [plan] = json.loads(raw)
    found = scans(plan["Plan"])
    pages = plan["Plan"]["Shared Hit Blocks"] + plan["Plan"]["Shared Read Blocks"]
    return f"{plan['Execution Time']:.0f} ms in SQL, {pages * 8 / 1024:.0f} MB of pages read; " + (
        "; ".join(found) or "no scan of messages"
    )


async def baselines(database_url: str, runs: int) -> dict[str, float]:
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    figures: dict[str, float] = {}
    try:
        for name, (start, end) in PERIODS.items():
            if start < KEPT_FROM:
                query = "SELECT sum(messages) FROM message_daily_stats WHERE day >= $1 AND day < $2"
                baseline = f"{name}: SELECT sum(messages) of the aggregates (baseline), ms"
                bounds: tuple[Any, Any] = (start.date(), end.date())
            else:
                query = "SELECT count(*) FROM messages WHERE created_at >= $1 AND created_at < $2"
                baseline = f"{name}: SELECT count(*) in the period (baseline), ms"
                bounds = (start, end)

            async def count(query: str = query, bounds: tuple[Any, Any] = bounds) -> Any:
                return await connection.fetchval(query, *bounds)

            figures[baseline] = await timed(count, runs)
    finally:
        await connection.close()
    return figures


async def write_cost(database_url: str, rows: int) -> float:
    """Seconds to insert `rows` messages (rolled back), in the next year: out of every
    period measured."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        transaction = connection.transaction()
        await transaction.start()
        started = time.perf_counter()
        await connection.execute(INSERT_MESSAGES, rows, KEPT_TO, timedelta(days=30), CATEGORIES)
        elapsed = time.perf_counter() - started
        await transaction.rollback()
    finally:
        await connection.close()
    return elapsed


async def sql(database_url: str, *statements: str) -> float:
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        started = time.perf_counter()
        for statement in statements:
            await connection.execute(statement)
        return time.perf_counter() - started
    finally:
        await connection.close()


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def bench(database_url: str, redis_url: str, messages: int, runs: int) -> dict[str, Any]:
    figures: dict[str, Any] = await fill(asyncpg_dsn(database_url), messages)
    with_index, plans = await requests(database_url, redis_url, runs, "with the index")
    figures |= with_index
    figures |= await baselines(database_url, runs)

    await sql(database_url, "DROP INDEX ix_messages_analytics", "ANALYZE messages")
    without_index, plans_without = await requests(
        database_url, redis_url, max(3, runs // 2), "without it"
    )
    figures |= {name: value for name, value in without_index.items() if "without" in name}
    plans |= plans_without

    writes = 100_000
    figures[f"writes: insert {writes:,} messages without the index, s"] = await write_cost(
        database_url, writes
    )
    figures[f"setup: CREATE INDEX ix_messages_analytics at {messages:,} rows, s"] = await sql(
        database_url,
        "CREATE INDEX ix_messages_analytics ON messages (created_at) INCLUDE "
        "(category, status, error_code, segments, price, price_unit)",
    )
    figures[f"writes: insert {writes:,} messages with the index, s"] = await write_cost(
        database_url, writes
    )
    figures["plans"] = plans
    return figures


def _order(name: str) -> tuple[int, str]:
    """Setup and disk first, then each period (its figures side by side), then writes."""
    for rank, period in enumerate(PERIODS, start=1):
        if name.startswith(f"{period}:"):
            return rank, name
    return (0 if name.startswith(("setup", "disk")) else len(PERIODS) + 1), name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with bench_servers() as servers:
        figures = asyncio.run(
            bench(servers.database_url, servers.redis_url, args.messages, args.runs)
        )
    plans: dict[str, str] = figures.pop("plans")
    width = max(len(name) for name in figures)
    for name, value in sorted(figures.items(), key=lambda item: _order(item[0])):
        shown = f"{value:12,d}" if isinstance(value, int) else f"{value:12.1f}"
        print(f"{name:<{width}}  {shown}")
    for name, plan in plans.items():
        print(f"plan, {name}: {plan}")
    print(json.dumps({name: round(value, 1) for name, value in figures.items()} | {"plans": plans}))


if __name__ == "__main__":
    main()
