"""Scenario 1: `kill -9` of a worker in the middle of a 2,000-message campaign; the other
worker finishes it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from faults.harness import Servers, begin, fault_stack
from tests.stack import Stack, wait_until

CAMPAIGN_SIZE = 2_000
NUMBERS = [f"+1415555{n:04d}" for n in range(CAMPAIGN_SIZE)]


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("worker-kill-logs")
    with fault_stack(servers, log_dir, name="faults_worker_kill", workers=2) as running:
        yield running


def test_a_worker_killed_mid_campaign_loses_and_repeats_nothing(stack: Stack) -> None:
    scenario = begin(stack, "worker kill -9 mid-campaign")
    stack.set_faults(latency_ms=20)  # a carrier a little slow: the campaign lasts
    with scenario.client() as api:
        accepted = api.post(
            "/api/sms/bulk-send",
            json={"body": "Spring sale: 20% off. Reply STOP to opt out.",
                  "recipients": {"numbers": NUMBERS}},
        )  # fmt: skip
        assert accepted.status_code == 202, accepted.text

    wait_until(
        lambda: len(stack.all_sandbox_messages()) >= CAMPAIGN_SIZE // 5,
        timeout=60,
        interval=0.2,
        what="the campaign under way",
    )
    victim = stack.processes["worker-1"]
    stack.stop("worker-1", kill=True)
    killed_at = time.monotonic()
    assert victim.returncode == -9
    at_kill = len(stack.all_sandbox_messages())
    assert at_kill < CAMPAIGN_SIZE, "the campaign was over before the kill"

    figures = scenario.conclude(recovering_since=killed_at)

    assert figures.accepted == CAMPAIGN_SIZE
    assert figures.delivered == CAMPAIGN_SIZE
    assert stack.processes["worker-2"].poll() is None, "the other worker finished it"
