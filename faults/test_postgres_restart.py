"""Scenario 3: PostgreSQL restarts (every connection cut) while messages are being sent and
clients keep sending; they retry what the API says to retry (503 while the database is out
of reach, 409 while a key is held by a request that failed, a dropped connection)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from faults.harness import Servers, begin, fault_stack
from faults.traffic import numbers, received, send_all
from tests.stack import Stack, wait_until


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("postgres-restart-logs")
    with fault_stack(servers, log_dir, name="faults_postgres", workers=2) as running:
        yield running


def test_a_postgres_restart_during_sending_loses_and_repeats_nothing(
    stack: Stack, servers: Servers
) -> None:
    scenario = begin(stack, "postgres restart")
    stack.set_faults(latency_ms=100)
    send_all(scenario, numbers(300, 200), "before")
    wait_until(lambda: received(scenario) >= 30, timeout=30, what="sending under way")

    answers: Counter[int] = Counter()

    def keep_sending() -> None:
        """A client sending through the restart: each message retried until accepted."""
        with scenario.client(timeout=5) as api:
            for number in numbers(301, 40):
                while True:
                    try:
                        response = api.post(
                            "/api/sms/send",
                            json={"to": number, "body": "during"},
                            headers={"Idempotency-Key": f"during-{number}"},
                        )
                    except httpx.TransportError:
                        continue
                    answers[response.status_code] += 1
                    if response.status_code == 202:
                        break
                    time.sleep(0.1)
                time.sleep(0.05)

    client = threading.Thread(target=keep_sending)
    client.start()
    wait_until(lambda: answers[202] >= 3, timeout=30, what="the client under way")
    servers.postgres.restart()
    restarted_at = time.monotonic()
    client.join(timeout=120)
    assert not client.is_alive()

    figures = scenario.conclude(recovering_since=restarted_at)

    assert figures.accepted == 240
    assert figures.delivered == 240
    assert set(answers) <= {202, 409, 503}, f"the API answered {dict(answers)}"
