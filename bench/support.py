"""What every benchmark needs: the servers, and a migrated database of its own."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import make_url

from app.core.migrations import upgrade_to_head
from app.core.settings import Settings


@dataclass(frozen=True, slots=True)
class Servers:
    database_url: str  # a database of the benchmark's own, migrated
    redis_url: str


async def own_database(server_url: str) -> tuple[str, Callable[[], Coroutine[Any, Any, None]]]:
    name = f"sms_bench_{secrets.token_hex(4)}"
    dsn = server_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    connection = await asyncpg.connect(dsn)
    await connection.execute(f'CREATE DATABASE "{name}"')
    await connection.close()

    async def drop() -> None:
        connection = await asyncpg.connect(dsn)
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.close()

    return make_url(server_url).set(database=name).render_as_string(False), drop


@contextmanager
def bench_servers() -> Iterator[Servers]:
    """BENCH_DATABASE_URL / BENCH_REDIS_URL (default: the test servers); the database is made
    for the run and dropped after it."""
    server = Settings(
        _env_file=None,
        database_url=os.environ.get(
            "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    ).database_url
    assert server is not None
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    database_url, drop = asyncio.run(own_database(server))
    try:
        upgrade_to_head(database_url)
        yield Servers(database_url, redis_url)
    finally:
        asyncio.run(drop())
