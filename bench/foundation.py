"""Foundation costs, each beside its baseline, in one run:

- phone numbers: parse + validate + encrypt + blind index per number, beside a bare
  `phonenumbers.parse` (what any service pays anyway);
- requests: the app's CPU per authenticated request (in-process ASGI, real PostgreSQL and
  Redis), with an API key and with a JWT, beside `/healthz` (the framework's floor).

    .venv/bin/python -m bench.foundation [--requests 2000]

Uses BENCH_DATABASE_URL / BENCH_REDIS_URL (default: the test servers), in a database of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import phonenumbers
from asgi_lifespan import LifespanManager

from app.auth import api_keys
from app.auth.principal import Scope
from app.core.crypto import PhoneCipher
from app.core.database import create_engine, create_sessionmaker, transaction
from app.core.phone import normalize_sms_number
from app.core.settings import Settings
from app.main import create_app
from bench.support import bench_servers

NUMBERS = ["+1 (415) 555-2671", "00 44 7911 123456", "+33 6 12 34 56 78", "+49 170 1234567"]


def per_call_us(work: Callable[[], object], rounds: int) -> float:
    started = time.perf_counter()
    for _ in range(rounds):
        work()
    return (time.perf_counter() - started) / rounds * 1e6


def bench_phone(rounds: int) -> dict[str, float]:
    settings = Settings(_env_file=None)
    cipher = PhoneCipher(settings.phone_keys, b"bench-index-key")

    def baseline() -> None:
        for raw in NUMBERS:
            phonenumbers.parse(raw, "US")

    def ours() -> None:
        for raw in NUMBERS:
            e164 = normalize_sms_number(raw, None, "US").e164
            assert e164 is not None
            cipher.encrypt(e164)
            cipher.blind_index(e164)

    return {
        "phonenumbers.parse (baseline), us/number": per_call_us(baseline, rounds) / len(NUMBERS),
        "normalise+encrypt+index, us/number": per_call_us(ours, rounds) / len(NUMBERS),
    }


async def timed_requests(
    call: Callable[[], Awaitable[httpx.Response]], count: int
) -> tuple[float, float]:
    """(requests per second of app CPU, p99 ms), one request at a time."""
    latencies = []
    started = time.perf_counter()
    for _ in range(count):
        before = time.perf_counter()
        response = await call()
        latencies.append(time.perf_counter() - before)
        assert response.status_code < 400, response.text
    elapsed = time.perf_counter() - started
    latencies.sort()
    return count / elapsed, latencies[int(len(latencies) * 0.99) - 1] * 1000


async def bench_requests(database_url: str, redis_url: str, count: int) -> dict[str, float]:
    settings = Settings(
        _env_file=None,
        database_url=database_url,
        redis_url=redis_url,
        log_level="WARNING",
    )
    engine = create_engine(settings)
    async with transaction(create_sessionmaker(engine)) as session:
        key = (await api_keys.create_key(session, "bench", [Scope.USERS_WRITE])).secret
    await engine.dispose()
    assert settings.jwt_secret is not None
    token = jwt.encode(
        {"sub": "bench-user", "exp": datetime.now(UTC) + timedelta(hours=1)},
        settings.jwt_secret.get_secret_value(),
        algorithm="HS256",
    )
    app = create_app(settings)
    figures: dict[str, float] = {}
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            with_key = {"Authorization": f"Bearer {key}"}
            with_jwt = {"Authorization": f"Bearer {token}"}
            await client.put("/api/users/bench-user", json={}, headers=with_key)
            cases: dict[str, Callable[[], Awaitable[httpx.Response]]] = {
                "GET /healthz (baseline)": lambda: client.get("/healthz"),
                "GET /api/users/{id}, API key": lambda: client.get(
                    "/api/users/bench-user", headers=with_key
                ),
                "GET /api/user/profile, JWT": lambda: client.get(
                    "/api/user/profile", headers=with_jwt
                ),
            }
            for name, call in cases.items():
                await timed_requests(call, count // 10)  # warm-up
                rate, p99 = await timed_requests(call, count)
                figures[f"{name}: req/s (one at a time)"] = rate
                figures[f"{name}: p99 ms"] = p99
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5000)
    args = parser.parse_args()

    figures = bench_phone(args.rounds)
    with bench_servers() as servers:
        figures |= asyncio.run(
            bench_requests(servers.database_url, servers.redis_url, args.requests)
        )

    width = max(len(name) for name in figures)
    for name, value in figures.items():
        print(f"{name:<{width}}  {value:10.1f}")
    print(json.dumps({name: round(value, 2) for name, value in figures.items()}))


if __name__ == "__main__":
    main()
