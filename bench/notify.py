"""One notify call to a team, beside what a service would do without it: one `/send` per
member (each a template rendered in the member's language), in one run.

    .venv/bin/python -m bench.notify [--members 50 500 5000]

In-process (ASGI, real PostgreSQL and Redis): the figure is the service's own cost per
recipient, without the network. Uses BENCH_DATABASE_URL / BENCH_REDIS_URL (default: the test
servers), in a database of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx
from asgi_lifespan import LifespanManager

from app.auth import api_keys
from app.auth.principal import Scope
from app.core.database import create_engine, create_sessionmaker, transaction
from app.core.settings import Settings
from app.main import create_app
from bench.support import bench_servers

TICKET = {
    "title": "Database connection issue",
    "severity": "high",
    "category": "technical",
    "created_by": "John Doe",
    "link": "https://tickets.example/t/1042",
}
LOCALES = [("en", "America/New_York"), ("fr", "Europe/Paris"), ("es", "Europe/Madrid")]


async def bench(database_url: str, redis_url: str, sizes: list[int]) -> dict[str, float]:
    settings = Settings(
        _env_file=None, database_url=database_url, redis_url=redis_url, log_level="WARNING"
    )
    engine = create_engine(settings)
    async with transaction(create_sessionmaker(engine)) as session:
        scopes = [Scope.SMS_SEND, Scope.USERS_WRITE]
        key = (await api_keys.create_key(session, "bench", scopes)).secret
    await engine.dispose()
    headers = {"Authorization": f"Bearer {key}"}
    figures: dict[str, float] = {}
    async with LifespanManager(create_app(settings)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", headers=headers, timeout=300
        ) as client:
            for size in sizes:
                team = [f"m{size}-{n}" for n in range(size)]
                for n, member in enumerate(team):
                    locale, zone = LOCALES[n % len(LOCALES)]
                    response = await client.put(
                        f"/api/users/{member}",
                        json={
                            "phone_number": f"+1415555{n:04d}",
                            "phone_verified": True,
                            "locale": locale,
                            "time_zone": zone,
                        },
                    )
                    assert response.status_code == 201, response.text
                topic = f"team-{size}"
                response = await client.put(
                    f"/api/topics/{topic}/subscribers", json={"user_ids": team}
                )
                assert response.status_code == 200, response.text

                started = time.perf_counter()
                response = await client.post(
                    "/api/sms/notify",
                    json={
                        "event": "ticket.created",
                        "data": TICKET,
                        "recipients": {"topic": topic},
                    },
                )
                notify_seconds = time.perf_counter() - started
                assert response.status_code == 202, response.text
                assert len(response.json()["queued"]) == size

                started = time.perf_counter()
                for member in team:
                    response = await client.post(
                        "/api/sms/send",
                        json={"user_id": member, "template": "ticket.created", "data": TICKET},
                    )
                    assert response.status_code == 202, response.text
                loop_seconds = time.perf_counter() - started

                figures[f"{size} members: one /notify, ms per recipient"] = (
                    notify_seconds / size * 1000
                )
                figures[f"{size} members: /send per member (baseline), ms per recipient"] = (
                    loop_seconds / size * 1000
                )
                figures[f"{size} members: /notify speed-up over the loop, x"] = (
                    loop_seconds / notify_seconds
                )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, nargs="+", default=[50, 500, 5000])  # ≤ 10,000
    args = parser.parse_args()
    with bench_servers() as servers:
        figures = asyncio.run(bench(servers.database_url, servers.redis_url, args.members))
    width = max(len(name) for name in figures)
    for name, value in figures.items():
        print(f"{name:<{width}}  {value:10.2f}")
    print(json.dumps({name: round(value, 3) for name, value in figures.items()}))


if __name__ == "__main__":
    main()
