"""A whole service for a fault scenario: the suite's own PostgreSQL (a database per module)
and Redis, the sandbox as its own server, the API under uvicorn, arq workers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx

from app.auth.principal import Scope
from app.core.migrations import upgrade_to_head
from faults.ledger import Figures, Ledger
from faults.servers import OwnPostgres, OwnRedis
from tests.stack import Stack, create_api_key
from tests.support import create_database

# Every scenario's service: no quiet hours (numbers in California must not wait for the
# morning whenever the suite runs), and the backstop poller asking after the minimum.
SCENARIO_ENV = {
    "QUIET_HOURS_START": "00:00",
    "QUIET_HOURS_END": "00:00",
    "STATUS_POLL_AFTER_SECONDS": "10",
}
SETTLE_TIMEOUT = 240.0

# Figures of every scenario run in this session, printed at its end (conftest.py).
REPORTED: list[Figures] = []


@dataclass
class Servers:
    postgres: OwnPostgres
    redis: OwnRedis


def admin_key(database_url: str) -> str:
    return create_api_key(database_url, "faults", [Scope.ADMIN])


@dataclass
class Scenario:
    """One scenario's run: where it started, and the ledger that checks it."""

    stack: Stack
    ledger: Ledger
    name: str
    since: datetime

    def client(self, timeout: float = 10) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.stack.extra_env['FAULTS_KEY']}"}
        return httpx.Client(base_url=self.stack.api, headers=headers, timeout=timeout)

    def conclude(self, *, recovering_since: float, timeout: float = SETTLE_TIMEOUT) -> Figures:
        """Waits for every message to be final, then checks both invariants and reports.
        `recovering_since`: time.monotonic() when the fault was over (or injected)."""
        import time

        self.ledger.settle(self.since, timeout=timeout)
        figures = self.ledger.figures(self.name, self.since, time.monotonic() - recovering_since)
        REPORTED.append(figures)
        (sys.__stderr__ or sys.stderr).write(f"\n[faults] {figures.line()}\n")
        assert figures.accepted > 0, "the scenario accepted nothing"
        assert figures.duplicates == 0, figures.line()
        assert figures.lost == 0, figures.line()
        return figures


@contextmanager
def fault_stack(
    servers: Servers,
    log_dir: Path,
    *,
    name: str,
    workers: int = 1,
    env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """A stack on a new database of the suite's PostgreSQL and its (flushed) Redis."""
    url, drop = create_database(servers.postgres.url, name)
    servers.redis.flushall()
    stack = Stack(url, servers.redis.url, log_dir)
    stack.extra_env.update({**SCENARIO_ENV, **(env or {})})
    try:
        upgrade_to_head(url)
        stack.extra_env["FAULTS_KEY"] = admin_key(url)
        stack.start_sandbox(callback_delay=0.05, hang_seconds=3.0)
        stack.start_api()
        for number in range(1, workers + 1):
            stack.start_worker(f"worker-{number}")
        yield stack
    finally:
        stack.stop_all()
        drop()


def begin(stack: Stack, name: str) -> Scenario:
    """A clean sandbox (no faults, nothing received) and the moment the scenario starts."""
    stack.reset_sandbox()
    ledger = Ledger(stack.database_url, stack.sandbox)
    return Scenario(stack, ledger, name, ledger.now())
