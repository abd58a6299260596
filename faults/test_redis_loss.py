"""Scenario 2: Redis loses everything (FLUSHALL), or restarts empty, while messages are
queued, scheduled for a few seconds later, and in flight at the carrier."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from faults.harness import Servers, begin, fault_stack
from faults.traffic import numbers, received, send_all
from tests.stack import Stack, wait_until


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("redis-loss-logs")
    # Ten sends at once: the messages are still going out when Redis loses them.
    env = {"WORKER_MAX_JOBS": "10"}
    with fault_stack(servers, log_dir, name="faults_redis", workers=1, env=env) as running:
        yield running


@pytest.mark.parametrize("fault", ["flushall", "restart"])
def test_redis_losing_its_jobs_loses_no_message(stack: Stack, servers: Servers, fault: str) -> None:
    inject: Callable[[], None] = getattr(servers.redis, fault)
    exchange = 201 if fault == "flushall" else 202
    scenario = begin(stack, f"redis {fault}")
    stack.set_faults(latency_ms=300)  # creates in flight at the carrier for a while
    stack.stop("worker-1")  # everything accepted first: then queued, scheduled, in flight
    send_all(scenario, numbers(exchange, 150), "now")
    send_all(scenario, numbers(exchange, 30, first_line=500), "later", send_in=8)
    stack.start_worker("worker-1")
    wait_until(lambda: received(scenario) >= 20, timeout=30, what="sending under way")

    before = received(scenario)
    inject()
    lost_at = time.monotonic()
    assert before < 150, "everything was sent before Redis lost it"
    # Accepted while Redis comes back: the messages are in PostgreSQL, the sweep finds them.
    send_all(scenario, numbers(exchange, 20, first_line=800), "after")

    figures = scenario.conclude(recovering_since=lost_at)

    assert figures.accepted == 200
    assert figures.delivered == 200
    assert stack.processes["worker-1"].poll() is None, "the worker survived the loss"
