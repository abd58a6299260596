"""Scenario 6: the API process is killed (-9) while requests with Idempotency-Keys are in
flight; it is started again and the clients retry each request until it is answered."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator

import httpx
import pytest

from faults.harness import Servers, begin, fault_stack
from faults.traffic import numbers
from tests.stack import Stack, wait_until

CLIENTS = 16
PER_CLIENT = 30


@pytest.fixture(scope="module")
def stack(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("api-kill-logs")
    with fault_stack(servers, log_dir, name="faults_api_kill", workers=1) as running:
        yield running


def test_killing_the_api_mid_request_sends_each_keyed_request_once(stack: Stack) -> None:
    scenario = begin(stack, "API kill -9 with keyed requests")
    ids: dict[str, set[str]] = defaultdict(set)
    answers: Counter[int] = Counter()
    lock = threading.Lock()

    def client(exchange: int) -> None:
        """Retries each request, with its key, until it is answered 202."""
        with scenario.client(timeout=5) as api:
            for number in numbers(exchange, PER_CLIENT):
                key = f"key-{number}"
                while True:
                    try:
                        response = api.post(
                            "/api/sms/send",
                            json={"to": number, "body": "keyed"},
                            headers={"Idempotency-Key": key},
                        )
                    except httpx.TransportError:
                        time.sleep(0.1)
                        continue
                    with lock:
                        answers[response.status_code] += 1
                    if response.status_code == 202:
                        with lock:
                            ids[key].add(response.json()["id"])
                        break
                    time.sleep(float(response.headers.get("Retry-After", "0.2")))

    threads = [threading.Thread(target=client, args=(600 + n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(ids) >= 100, timeout=30, what="requests answered")
    stack.stop("api", kill=True)
    killed_at = time.monotonic()
    stack.start_api()
    for thread in threads:
        thread.join(timeout=180)
    assert not any(thread.is_alive() for thread in threads), "a client never got its answer"

    figures = scenario.conclude(recovering_since=killed_at)

    assert len(ids) == CLIENTS * PER_CLIENT
    assert all(len(found) == 1 for found in ids.values()), "a key answered two messages"
    assert figures.accepted == CLIENTS * PER_CLIENT, "a keyed request made two messages"
    assert figures.delivered == CLIENTS * PER_CLIENT
    assert set(answers) <= {202, 409}, f"the API answered {dict(answers)}"
