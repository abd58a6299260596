"""End to end through real processes: API (uvicorn), arq workers, the Twilio sandbox as its own
server, PostgreSQL and Redis. What is checked is what users would see: the status the API
reports, and what each number's inbox at the "carrier" received (never twice)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis
from arq import create_pool
from arq.connections import RedisSettings

from app.core.crypto import PhoneCipher
from app.core.settings import Settings
from app.outbox.queue import enqueue_send
from tests.stack import Stack, api_client, e2e_stack, settled, wait_until

E2E_REDIS_DB = 12
SETTLE_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def stack(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("e2e-logs")
    with e2e_stack(database_url, redis_url, log_dir, name="sms_e2e", redis_db=E2E_REDIS_DB) as s:
        yield s


@pytest.fixture(autouse=True)
def clean_sandbox(stack: Stack) -> None:
    stack.reset_sandbox()


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    with api_client(stack) as client:
        yield client


def send(api: httpx.Client, to: str, body: str, **extra: Any) -> dict[str, Any]:
    response = api.post("/api/sms/send", json={"to": to, "body": body, **extra})
    assert response.status_code == 202, response.text
    message: dict[str, Any] = response.json()
    return message


def test_a_message_goes_queued_sending_sent_delivered(stack: Stack, api: httpx.Client) -> None:
    message = send(api, "+14155552671", "Your booking is confirmed")
    assert message["status"] == "queued"

    final = settled(api, message["id"])

    assert final["status"] == "delivered"
    history = [
        (change["status"], change["twilio_status"], change["source"]) for change in final["history"]
    ]
    assert history == [
        ("queued", None, "api"),
        ("sending", None, "worker"),  # claimed
        ("sending", "queued", "worker"),  # Twilio took it
        ("sent", "sent", "callback"),
        ("delivered", "delivered", "callback"),
    ]
    assert final["twilio_sid"].startswith("SM")
    inbox = stack.inbox("+14155552671")
    assert [(item["sid"], item["body"]) for item in inbox] == [
        (final["twilio_sid"], "Your booking is confirmed")
    ]


@pytest.mark.parametrize(
    ("number", "status", "code"),
    [
        ("+15005550001", "failed", 21211),
        ("+15005550002", "failed", 21612),
        ("+15005550003", "failed", 21408),
        ("+15005550004", "failed", 21610),
        ("+15005550009", "failed", 21614),
        ("+15005550020", "undelivered", 30003),
        ("+15005550021", "failed", 30008),
        ("+15005550006", "delivered", None),
    ],
)
def test_each_magic_number_ends_in_its_documented_state(
    stack: Stack, api: httpx.Client, number: str, status: str, code: int | None
) -> None:
    final = settled(api, send(api, number, f"magic {number}")["id"])

    assert (final["status"], final["error_code"]) == (status, code)
    if code is not None:
        assert final["error_message"]


def test_21610_puts_the_number_on_the_stop_list(stack: Stack, api: httpx.Client) -> None:
    settled(api, send(api, "+15005550004", "first")["id"])

    second = send(api, "+15005550004", "second")

    assert second["status"] == "suppressed"
    assert second["suppression_reason"] == "opted_out"


def test_429_storms_and_5xx_are_retried_to_success_without_duplicates(
    stack: Stack, api: httpx.Client
) -> None:
    stack.set_faults(rate_429=0.5, rate_5xx=0.3, seed=7)
    numbers = [f"+1415555{n:04d}" for n in range(2700, 2720)]

    ids = [send(api, number, "storm")["id"] for number in numbers]
    finals = [settled(api, message_id, timeout=60) for message_id in ids]

    assert {final["status"] for final in finals} == {"delivered"}
    assert max(final["attempts"] for final in finals) > 1  # the storm was real
    received = Counter(item["to"] for item in stack.all_sandbox_messages())
    assert received == Counter(numbers)


def test_a_timeout_after_twilio_accepted_leads_to_adoption_not_a_resend(
    stack: Stack, api: httpx.Client
) -> None:
    stack.set_faults(timeout_rate=1.0)
    message = send(api, "+14155552680", "accepted, answer lost")

    def taken_by_the_sandbox() -> bool:
        return len(stack.inbox("+14155552680")) == 1

    wait_until(taken_by_the_sandbox, timeout=10, what="the sandbox taking the message")
    stack.set_faults()  # the next attempt's look-up must get an answer
    final = settled(api, message["id"])

    assert final["status"] == "delivered"
    inbox = stack.inbox("+14155552680")
    assert len(inbox) == 1
    assert final["twilio_sid"] == inbox[0]["sid"]


def test_an_opted_out_number_gets_nothing_even_for_messages_queued_before_the_stop(
    stack: Stack, api: httpx.Client
) -> None:
    stack.stop("worker-1")
    try:
        queued = send(api, "+14155552690", "queued before the STOP")
        reply = stack.signed_post(
            "/api/sms/inbound",
            {"MessageSid": "SM" + "0" * 32, "From": "+14155552690", "To": "+15005550006",
             "Body": "STOP", "AccountSid": "AC" + "5a" * 16},
        )  # fmt: skip
        assert reply.status_code == 200
        assert "unsubscribed" in reply.text
    finally:
        stack.start_worker("worker-1")

    final = settled(api, queued["id"])
    after = send(api, "+14155552690", "after the STOP")

    assert (final["status"], final["suppression_reason"]) == ("suppressed", "opted_out")
    assert (after["status"], after["suppression_reason"]) == ("suppressed", "opted_out")
    assert stack.inbox("+14155552690") == []


def test_a_redis_flushall_loses_no_queued_or_scheduled_message(
    stack: Stack, api: httpx.Client
) -> None:
    stack.stop("worker-1")
    try:
        queued = [send(api, f"+1415555{n:04d}", "queued")["id"] for n in range(2800, 2805)]
        soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
        scheduled = [
            send(api, f"+1415555{n:04d}", "scheduled", send_at=soon)["id"]
            for n in range(2805, 2808)
        ]
        # The stack's own Redis db: FLUSHALL would wipe other test sessions' dbs too.
        redis.Redis.from_url(stack.redis_url).flushdb()
    finally:
        stack.start_worker("worker-1")

    finals = [settled(api, message_id) for message_id in queued + scheduled]

    assert {final["status"] for final in finals} == {"delivered"}
    assert len(stack.all_sandbox_messages()) == 8


def test_two_workers_never_send_the_same_message(stack: Stack, api: httpx.Client) -> None:
    stack.start_worker("worker-2")
    try:
        numbers = [f"+1415556{n:04d}" for n in range(200)]
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(lambda number: send(api, number, "one each")["id"], numbers))
        finals = [settled(api, message_id) for message_id in ids]
    finally:
        stack.stop("worker-2")

    assert {final["status"] for final in finals} == {"delivered"}
    received = Counter(item["to"] for item in stack.all_sandbox_messages())
    assert received == Counter(numbers)
    worker_logs = [(stack.log_dir / f"{name}.log").read_text() for name in ("worker-1", "worker-2")]
    assert all("send_message" in log for log in worker_logs), "both workers took a share"


def test_ten_concurrent_requests_with_one_idempotency_key_create_one_message(
    stack: Stack, api: httpx.Client
) -> None:
    headers = {**api.headers, "Idempotency-Key": "e2e-key-1"}
    body = {"to": "+14155552699", "body": "once"}

    def post() -> httpx.Response:
        return httpx.post(f"{stack.api}/api/sms/send", json=body, headers=headers, timeout=10)

    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(lambda _: post(), range(10)))

    assert {response.status_code for response in responses} <= {202, 409}
    ids = {response.json()["id"] for response in responses if response.status_code == 202}
    assert len(ids) == 1
    final = settled(api, ids.pop())
    assert final["status"] == "delivered"
    assert len(stack.inbox("+14155552699")) == 1
    assert post().json()["id"] == final["id"]  # the replay, after the fact


def test_a_code_goes_ahead_of_a_queued_campaign_of_10000(stack: Stack, api: httpx.Client) -> None:
    # Last in this module: it leaves the queue busy, then clears it.
    api.put(
        "/api/users/e2e-2fa",
        json={"phone_number": "+14155552698", "phone_verified": True},
    ).raise_for_status()
    stack.stop("worker-1")
    campaign = asyncio.run(_queue_campaign(stack.database_url, stack.redis_url, 10_000))
    queue = redis.Redis.from_url(stack.redis_url)
    try:
        stack.start_worker("worker-1")
        wait_until(
            lambda: int(queue.zcard("arq:queue")) < 9_800,  # type: ignore[arg-type]
            timeout=30,
            what="the campaign under way",
        )
        started = time.monotonic()
        answer = api.post("/api/sms/send-2fa", json={"user_id": "e2e-2fa"})
        assert answer.status_code == 202, answer.text
        wait_until(
            lambda: len(stack.inbox("+14155552698")) == 1,
            timeout=10,
            interval=0.02,
            what="the code in the inbox",
        )
        took = time.monotonic() - started
        still_queued = int(queue.zcard("arq:queue"))  # type: ignore[arg-type]
    finally:
        stack.stop("worker-1")
        queue.flushdb()
        asyncio.run(_drop_campaign(stack.database_url, campaign))
        stack.start_worker("worker-1")

    print(f"\n[e2e] code in the inbox {took:.2f} s after the request, {still_queued} still queued")
    # Order, not time (SPEC's 2 s is a target, measured in bench/): the code went ahead of
    # thousands of campaign messages queued before it.
    assert still_queued > 1_000
    body = stack.inbox("+14155552698")[0]["body"]
    assert re.search(r"\b\d{6}\b", body)


async def _queue_campaign(database_url: str, redis_url: str, count: int) -> str:
    """`count` queued messages written set-based (as a campaign would), to a sandbox number,
    and their jobs on the queue."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    settings = Settings(_env_file=None, database_url=database_url)
    assert settings.database_url is not None
    cipher = PhoneCipher(
        settings.phone_keys, settings.phone_blind_index_key.get_secret_value().encode()
    )
    number = "+15005550006"
    reference = f"campaign-{uuid.uuid4().hex[:8]}"
    engine = create_async_engine(settings.database_url)
    try:
        async with engine.begin() as connection:
            result = await connection.execute(
                text(
                    "INSERT INTO messages (id, to_encrypted, to_index, to_region, body, category,"
                    " status, encoding, segments, reference, requested_by, expires_at)"
                    " SELECT gen_random_uuid(), :to, :index, 'US', 'campaign ' || n, 'marketing',"
                    " 'queued', 'GSM-7', 1, :reference, 'api_key:e2e', now() + interval '1 hour'"
                    " FROM generate_series(1, :count) AS n RETURNING id"
                ),
                {
                    "to": cipher.encrypt(number),
                    "index": cipher.blind_index(number),
                    "reference": reference,
                    "count": count,
                },
            )
            ids = [row[0] for row in result]
    finally:
        await engine.dispose()
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    try:
        await enqueue_send(pool, ids)
    finally:
        await pool.aclose()
    return reference


async def _drop_campaign(database_url: str, reference: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    url = Settings(_env_file=None, database_url=database_url).database_url
    assert url is not None
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text("DELETE FROM messages WHERE reference = :reference"),
                {"reference": reference},
            )
    finally:
        await engine.dispose()
