"""Scenario 4: the carrier answers 429s, 5xx (before and after taking the message), slowly,
or not in time after taking the message; for single messages and a campaign alike."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from faults.harness import Servers, begin, fault_stack
from faults.traffic import numbers, send_all
from tests.stack import Stack


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("twilio-faults-logs")
    with fault_stack(servers, log_dir, name="faults_twilio", workers=2) as running:
        yield running


def test_an_unreliable_carrier_gets_each_message_once(stack: Stack) -> None:
    scenario = begin(stack, "carrier 429/5xx/slow/timeouts")
    stack.set_faults(
        rate_429=0.2,
        rate_5xx=0.1,
        rate_5xx_after_accept=0.1,
        timeout_rate=0.05,  # held 3 s, the client gives up after 1 s
        slow_rate=0.2,
        slow_ms=600,
        seed=4,
    )
    send_all(scenario, numbers(400, 120), "single")
    with scenario.client() as api:
        campaign = api.post(
            "/api/sms/bulk-send",
            json={"body": "campaign", "recipients": {"numbers": numbers(401, 300)}},
        )
        assert campaign.status_code == 202, campaign.text
    accepted_at = time.monotonic()

    figures = scenario.conclude(recovering_since=accepted_at)

    assert figures.accepted == 420
    assert figures.delivered == 420
    history = stack.all_sandbox_messages()
    assert len(history) == 420
