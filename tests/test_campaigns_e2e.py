"""A campaign end to end through real processes: the API under uvicorn, two arq workers, the
Twilio sandbox as its own server. A campaign of 2,000 numbers is paused (sending stops within
a second), resumed, then cancelled part-way: at the end its counts add up to the total, every
message is final, and no number received anything twice."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from app.auth.principal import Scope
from app.core.migrations import upgrade_to_head
from tests.stack import Stack, api_client, create_api_key, redis_url_for_db, wait_until
from tests.support import create_database

E2E_REDIS_DB = 10
CAMPAIGN_SIZE = 2_000
NUMBERS = [f"+1415555{n:04d}" for n in range(CAMPAIGN_SIZE)]
PENDING = ("queued", "scheduled", "sending", "sent")  # not final yet (sending: maybe at Twilio)


def _bulk_key(database_url: str) -> str:
    return create_api_key(database_url, "e2e-bulk", [Scope.SMS_BULK, Scope.SMS_READ])


@pytest.fixture(scope="module")
def stack(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A stack of the module's own (database, Redis db) with two workers. Quiet hours are
    off: the Californian numbers must not wait for the morning whenever the test runs."""
    url, drop = create_database(database_url, "sms_bulk_e2e")
    own_redis = redis_url_for_db(redis_url, E2E_REDIS_DB)
    redis.Redis.from_url(own_redis).flushdb()
    stack = Stack(url, own_redis, tmp_path_factory.mktemp("bulk-e2e-logs"))
    stack.extra_env.update(
        {
            "QUIET_HOURS_START": "00:00",
            "QUIET_HOURS_END": "00:00",
            # A few messages in flight per worker: the campaign lasts long enough to be
            # paused and cancelled part-way.
            "CAMPAIGN_CONCURRENCY": "4",
        }
    )
    try:
        upgrade_to_head(url)
        stack.start_sandbox(callback_delay=0.05)
        stack.start_api()
        stack.extra_env["E2E_KEY"] = _bulk_key(url)
        stack.start_worker("worker-1")
        stack.start_worker("worker-2")
        yield stack
    finally:
        stack.stop_all()
        drop()


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    with api_client(stack) as client:
        yield client


def progress(api: httpx.Client, campaign_id: str) -> dict[str, Any]:
    response = api.get(f"/api/sms/bulk/{campaign_id}")
    assert response.status_code == 200, response.text
    campaign: dict[str, Any] = response.json()
    return campaign


def at_twilio(stack: Stack) -> int:
    """What the carrier received (its whole listing: read at checkpoints, not in loops)."""
    return len(stack.all_sandbox_messages())


def handed(api: httpx.Client, campaign_id: str) -> int:
    """Messages claimed or handed to Twilio, by the campaign's own counts."""
    counts = progress(api, campaign_id)["counts"]
    return sum(int(counts[status]) for status in ("sending", "sent", "delivered", "undelivered"))


def test_a_campaign_of_2000_paused_resumed_and_cancelled_sends_each_number_at_most_once(
    stack: Stack, api: httpx.Client
) -> None:
    stack.reset_sandbox()
    stack.set_faults(latency_ms=20)  # a carrier a little slow to answer
    accepted = api.post(
        "/api/sms/bulk-send",
        json={"body": "Spring sale: 20% off this week. Reply STOP to opt out.",
              "recipients": {"numbers": NUMBERS}},
    )  # fmt: skip
    assert accepted.status_code == 202, accepted.text
    campaign = accepted.json()
    campaign_id = campaign["id"]
    assert campaign["status"] == "running"
    assert campaign["estimate"]["recipients"] == CAMPAIGN_SIZE
    assert campaign["counts"]["queued"] == CAMPAIGN_SIZE

    # Pause shortly after the start: within a second nothing more reaches the carrier.
    wait_until(
        lambda: handed(api, campaign_id) >= 150,
        timeout=20,
        interval=0.1,
        what="the campaign under way",
    )
    paused = api.post(f"/api/sms/bulk/{campaign_id}/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused"
    time.sleep(1.0)
    after_a_second = at_twilio(stack)
    queued_then = progress(api, campaign_id)["counts"]["queued"]
    time.sleep(1.5)
    assert at_twilio(stack) == after_a_second, "messages kept going out after the pause"
    still = progress(api, campaign_id)
    assert still["status"] == "paused"
    assert still["counts"]["queued"] == queued_then > 0
    print(f"\n[bulk e2e] paused with {after_a_second} of {CAMPAIGN_SIZE} at the carrier")

    # Resume: the rest goes on; cancel part-way.
    resumed = api.post(f"/api/sms/bulk/{campaign_id}/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "running"
    wait_until(
        lambda: handed(api, campaign_id) >= after_a_second + 600,
        timeout=30,
        interval=0.1,
        what="the campaign under way again",
    )
    cancelled = api.post(f"/api/sms/bulk/{campaign_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["counts"]["cancelled"] > 0

    # Every message final: delivered (those handed to Twilio) or cancelled.
    def settled() -> bool:
        counts = progress(api, campaign_id)["counts"]
        return sum(int(counts[status]) for status in PENDING) == 0

    wait_until(settled, timeout=30, interval=0.2, what="every message final")
    final = progress(api, campaign_id)
    counts = final["counts"]
    assert final["status"] == "cancelled"
    assert counts["total"] == CAMPAIGN_SIZE
    assert counts["delivered"] + counts["cancelled"] == CAMPAIGN_SIZE, counts
    assert 0 < counts["cancelled"] < CAMPAIGN_SIZE - after_a_second
    received = Counter(message["to"] for message in stack.all_sandbox_messages())
    assert max(received.values()) == 1, "a number received the campaign twice"
    assert sum(received.values()) == counts["delivered"]
    assert set(received) <= set(NUMBERS)
    assert api.post(f"/api/sms/bulk/{campaign_id}/resume").status_code == 409
    worker_logs = [(stack.log_dir / f"{name}.log").read_text() for name in ("worker-1", "worker-2")]
    print(f"[bulk e2e] final counts {counts}")
    assert all("send_campaign_chunk" in log for log in worker_logs), "both workers sent chunks"
