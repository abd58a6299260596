"""Scenario 5: status callbacks duplicated, out of order, never sent, or held back until
after the backstop poller learned the status (then sent late, newest first)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from faults.harness import Servers, begin, fault_stack
from faults.ledger import asyncpg_dsn
from faults.traffic import numbers, send_all
from tests.stack import Stack


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("callback-faults-logs")
    with fault_stack(servers, log_dir, name="faults_callbacks", workers=1) as running:
        yield running


def history(database_url: str) -> list[tuple[str, str, int]]:
    """(message, status, events) of every message: what a late callback must not change."""

    async def read() -> list[tuple[str, str, int]]:
        connection = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            rows = await connection.fetch(
                "SELECT m.id, m.status, count(e.id) AS events FROM messages m"
                " JOIN message_events e ON e.message_id = m.id GROUP BY m.id ORDER BY m.id"
            )
        finally:
            await connection.close()
        return [(str(row["id"]), row["status"], int(row["events"])) for row in rows]

    return asyncio.run(read())


def test_callbacks_duplicated_reordered_dropped_or_late_change_nothing_twice(
    stack: Stack,
) -> None:
    scenario = begin(stack, "callbacks dup/reordered/dropped/late")
    stack.set_faults(
        duplicate_callbacks=0.3,
        out_of_order_callbacks=True,
        drop_callbacks=0.2,
        hold_callbacks=0.2,
        seed=5,
    )
    send_all(scenario, numbers(500, 150), "callbacks")
    sent_at = time.monotonic()

    # Dropped and held callbacks leave messages the poller must settle.
    figures = scenario.conclude(recovering_since=sent_at)
    settled = history(stack.database_url)
    released = httpx.post(f"{stack.sandbox}/sandbox/callbacks/release", timeout=60)
    released.raise_for_status()

    assert figures.accepted == figures.delivered == 150
    assert released.json()["released"] > 0
    assert history(stack.database_url) == settled, "a late callback changed a settled message"
