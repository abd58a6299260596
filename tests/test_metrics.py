"""The Prometheus metrics operators watch: each one moves exactly as the event it counts,
read from the registry before and after (and from /metrics, the API's and the worker's)."""

from __future__ import annotations

import random
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis.asyncio
import respx
from arq import create_pool
from arq.connections import ArqRedis
from prometheus_client import REGISTRY, CollectorRegistry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.principal import Scope
from app.core.crypto import PhoneCipher
from app.core.metrics import SampledGauge
from app.core.redis import redis_settings
from app.core.settings import Settings
from app.delivery_status.tasks import poll_statuses
from app.messages.metrics import count_entered
from app.outbox import tasks
from app.outbox.queue import enqueue_pending
from app.outbox.service import Outbox, Outcome
from app.twilio.client import TwilioClient
from app.worker import shutdown, startup
from tests.conftest import as_user
from tests.sending_support import (
    TO,
    add_message,
    created,
    load,
    make_due,
    new_sid,
    page,
    resource,
    set_columns,
    signed,
    twilio_base,
    twilio_error,
)

MakeKey = Callable[..., Awaitable[dict[str, str]]]
WEBHOOK = "/api/sms/webhook"


@pytest.fixture
def api(settings: Settings) -> Iterator[respx.MockRouter]:
    """Twilio, as respx: any request without a route fails the test."""
    with respx.mock(base_url=twilio_base(settings), assert_all_called=False) as router:
        yield router


@pytest.fixture
async def arq_redis(settings: Settings) -> AsyncIterator[ArqRedis]:
    """arq's pool on a queue of this test's own: the test Redis may be shared with other runs,
    and the queue's depth is counted whole."""
    queue = f"arq:queue:test-{uuid.uuid4().hex}"
    pool = await create_pool(redis_settings(settings), default_queue_name=queue)
    yield pool
    await pool.delete(queue)
    await pool.aclose()


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def total(name: str) -> float:
    """A counter summed over all its labels."""
    return sum(
        sample.value
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name == name
    )


class Reading:
    """Values read now, and how far they moved since."""

    def __init__(self, *series: tuple[str, dict[str, str]]) -> None:
        self.series = series
        self.before = [value(name, **labels) for name, labels in series]

    def moved(self) -> list[float]:
        return [
            value(name, **labels) - before
            for (name, labels), before in zip(self.series, self.before, strict=True)
        ]


def messages(status: str, category: str = "transactional") -> tuple[str, dict[str, str]]:
    return "sms_messages_total", {"status": status, "category": category}


def twilio_requests(operation: str) -> tuple[str, dict[str, str]]:
    return "sms_twilio_request_seconds_count", {"operation": operation}


def callback_lag(status: str, part: str = "count") -> tuple[str, dict[str, str]]:
    return f"sms_callback_lag_seconds_{part}", {"status": status}


async def post_callback(
    client: httpx.AsyncClient, settings: Settings, sid: str, status: str
) -> None:
    params = {
        "MessageSid": sid,
        "MessageStatus": status,
        "AccountSid": "AC" + "5a" * 16,
        "From": "+15005550006",
        "To": TO,
        "ApiVersion": "2010-04-01",
    }
    response = await client.post(WEBHOOK, data=params, headers=signed(settings, WEBHOOK, params))
    assert response.status_code == 204, response.text


def now() -> datetime:
    return datetime.now(UTC)


# --- messages by status and category; Twilio's latency; callback lag ---------------------------


async def test_a_send_and_its_callbacks_count_each_status_once_and_time_each_step(
    outbox: Outbox,
    api: respx.MockRouter,
    client: httpx.AsyncClient,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    message_id = await add_message(sessionmaker, cipher, category="booking_confirmation")
    sid = new_sid()
    api.post("/Messages.json").mock(return_value=created(sid, status="queued"))
    category = "booking_confirmation"
    reading = Reading(
        messages("sending", category),
        messages("sent", category),
        messages("delivered", category),
        twilio_requests("create"),
        ("sms_twilio_request_seconds_sum", {"operation": "create"}),
    )

    assert (await outbox.send(message_id)).outcome is Outcome.ACCEPTED

    sending, sent, delivered, creates, create_seconds = reading.moved()
    # Twilio's "queued" keeps it sending: entered once, at the claim.
    assert (sending, sent, delivered, creates) == (1, 0, 0, 1)
    assert 0 < create_seconds < 2

    # The attempt handed it to Twilio 42 s ago; the callbacks arrive now.
    await set_columns(sessionmaker, message_id, last_attempt_at=now() - timedelta(seconds=42))
    lags = Reading(
        callback_lag("sent"),
        callback_lag("sent", "sum"),
        callback_lag("delivered"),
        callback_lag("delivered", "sum"),
    )
    await post_callback(client, settings, sid, "sent")
    await post_callback(client, settings, sid, "delivered")
    await post_callback(client, settings, sid, "delivered")  # a duplicate changes nothing
    await post_callback(client, settings, sid, "sent")  # nor does a late one

    assert (await load(sessionmaker, message_id)).status == "delivered"
    sending, sent, delivered, creates, _ = reading.moved()
    assert (sending, sent, delivered, creates) == (1, 1, 1, 1)
    sent_lags, sent_lag_seconds, delivered_lags, delivered_lag_seconds = lags.moved()
    assert (sent_lags, delivered_lags) == (1, 1)
    assert 42 <= sent_lag_seconds < 52
    assert 42 <= delivered_lag_seconds < 52


async def test_the_poller_counts_the_status_it_applies_but_no_callback_lag(
    api: respx.MockRouter,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    twilio: TwilioClient,
) -> None:
    sid = new_sid()
    await add_message(
        sessionmaker,
        cipher,
        status="sent",
        twilio_sid=sid,
        attempts=1,
        last_attempt_at=now() - timedelta(hours=1),
        updated_at=now() - timedelta(seconds=settings.status_poll_after_seconds + 60),
    )
    api.get(f"/Messages/{sid}.json").mock(
        return_value=httpx.Response(200, json=resource(sid, status="delivered"))
    )
    reading = Reading(messages("delivered"), callback_lag("delivered"), twilio_requests("fetch"))
    ctx: dict[str, Any] = {
        "state": {"settings": settings, "sessionmaker": sessionmaker, "twilio": twilio}
    }

    assert await poll_statuses(ctx) == 1

    assert reading.moved() == [1, 0, 1]


async def test_messages_accepted_and_cancelled_through_the_api_are_counted(
    client: httpx.AsyncClient, make_api_key: MakeKey
) -> None:
    sender = await make_api_key(Scope.SMS_SEND)
    reading = Reading(messages("queued"), messages("scheduled"), messages("cancelled"))

    now_one = await client.post("/api/sms/send", json={"to": TO, "body": "hi"}, headers=sender)
    later = {"to": TO, "body": "later", "send_at": (now() + timedelta(hours=2)).isoformat()}
    later_one = await client.post("/api/sms/send", json=later, headers=sender)
    refused = await client.post("/api/sms/send", json={"to": TO, "body": " "}, headers=sender)

    assert (now_one.status_code, later_one.status_code, refused.status_code) == (202, 202, 422)
    assert reading.moved() == [1, 1, 0]

    cancelled = await client.post(
        f"/api/sms/messages/{later_one.json()['id']}/cancel", headers=sender
    )
    assert cancelled.status_code == 200, cancelled.text
    assert reading.moved() == [1, 1, 1]


async def test_a_status_is_counted_when_its_transaction_commits_never_when_rolled_back(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    reading = Reading(messages("queued", "test"))

    async with sessionmaker() as session:
        with pytest.raises(RuntimeError):  # no transaction: no change to count
            count_entered(session, "queued", ["test"])
        await session.execute(select(1))
        count_entered(session, "queued", ["test"])
        await session.rollback()
        # The same session, closed with a count pending, then used again and committed.
        await session.execute(select(1))
        count_entered(session, "queued", ["test"])
        await session.close()
        await session.execute(select(1))
        assert reading.moved() == [0]
        count_entered(session, "queued", ["test", "test"])
        await session.commit()

    assert reading.moved() == [2]


# --- Twilio's errors by code --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "code", "outcome"),
    [
        pytest.param(twilio_error(400, 21211), "21211", Outcome.FAILED, id="refused-21211"),
        pytest.param(httpx.ReadTimeout("slow"), "timeout", Outcome.RETRY, id="timeout"),
        pytest.param(httpx.ConnectError("refused"), "connection", Outcome.RETRY, id="connection"),
        pytest.param(httpx.Response(503, text="busy"), "http_503", Outcome.RETRY, id="bare-503"),
    ],
)
async def test_a_failed_create_counts_one_error_under_its_code(
    answer: httpx.Response | Exception,
    code: str,
    outcome: Outcome,
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    message_id = await add_message(sessionmaker, cipher)
    api.post("/Messages.json").mock(side_effect=[answer])
    errors_before = total("sms_twilio_errors_total")
    reading = Reading(
        ("sms_twilio_errors_total", {"code": code}),
        twilio_requests("create"),
        messages("failed"),
    )

    assert (await outbox.send(message_id)).outcome is outcome

    assert reading.moved() == [1, 1, 1 if outcome is Outcome.FAILED else 0]
    assert total("sms_twilio_errors_total") - errors_before == 1


async def test_each_twilio_operation_is_timed_under_its_own_name(
    api: respx.MockRouter, twilio: TwilioClient
) -> None:
    sid = new_sid()
    api.get(f"/Messages/{sid}.json").mock(return_value=httpx.Response(200, json=resource(sid)))
    api.get("/Messages.json").mock(return_value=page(resource(sid)))
    api.post(f"/Messages/{sid}.json").mock(
        return_value=httpx.Response(200, json=resource(sid, status="canceled"))
    )
    reading = Reading(
        twilio_requests("create"),
        twilio_requests("fetch"),
        twilio_requests("list"),
        twilio_requests("cancel"),
    )
    errors_before = total("sms_twilio_errors_total")

    await twilio.fetch_message(sid)
    await twilio.list_messages(to=TO)
    await twilio.cancel_message(sid)

    assert reading.moved() == [0, 1, 1, 1]
    assert total("sms_twilio_errors_total") == errors_before


# --- lateness of a message's first claim --------------------------------------------------------


async def test_lateness_is_observed_at_the_first_claim_against_when_the_message_was_due(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    hour_ago = now() - timedelta(hours=1)
    queued = await add_message(sessionmaker, cipher, created_at=hour_ago, next_attempt_at=hour_ago)
    # Scheduled for 10 minutes ago, created two hours ago: due at its send_at.
    ten_minutes_ago = now() - timedelta(minutes=10)
    scheduled = await add_message(
        sessionmaker,
        cipher,
        category="booking_reminder",
        created_at=now() - timedelta(hours=2),
        send_at=ten_minutes_ago,
        next_attempt_at=ten_minutes_ago,
    )
    create = api.post("/Messages.json")
    create.side_effect = [twilio_error(429, 20429), created(new_sid()), created(new_sid())]
    reading = Reading(
        ("sms_send_lateness_seconds_count", {"category": "transactional"}),
        ("sms_send_lateness_seconds_sum", {"category": "transactional"}),
        ("sms_send_lateness_seconds_count", {"category": "booking_reminder"}),
        ("sms_send_lateness_seconds_sum", {"category": "booking_reminder"}),
    )

    assert (await outbox.send(queued)).outcome is Outcome.RETRY
    await make_due(sessionmaker, queued)
    assert (await outbox.send(queued)).outcome is Outcome.ACCEPTED  # a retry: not observed
    assert (await outbox.send(scheduled)).outcome is Outcome.ACCEPTED

    # The claims' clock is the database's now(): the test transaction's start, around now.
    queued_count, queued_seconds, scheduled_count, scheduled_seconds = reading.moved()
    assert (queued_count, scheduled_count) == (1, 1)
    assert queued_seconds == pytest.approx(3600, abs=30)
    assert scheduled_seconds == pytest.approx(600, abs=30)


# --- queue depth and the backlog, sampled by the sweep ------------------------------------------


async def test_the_sweep_samples_the_queue_depth_and_the_due_messages(
    arq_redis: ArqRedis,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    future = now() + timedelta(hours=1)
    first = await add_message(sessionmaker, cipher, body="one")
    await add_message(sessionmaker, cipher, body="two")
    later = await add_message(
        sessionmaker, cipher, status="scheduled", send_at=future, next_attempt_at=future
    )
    # Held by a worker right now: not free to claim.
    await add_message(sessionmaker, cipher, status="sending", attempts=1, lease_until=future)
    # The scheduled one's job, deferred to its time: on the queue, not due.
    assert await enqueue_pending(arq_redis, [(later, future)]) == 1
    ctx: dict[str, Any] = {"state": {"sessionmaker": sessionmaker, "redis": arq_redis}}

    await tasks.sweep(ctx)

    assert value("sms_queue_depth") == 2
    assert value("sms_messages_due") == 2

    # One went out (Twilio has it; a worker ran its job): both figures follow.
    await set_columns(sessionmaker, first, status="sent", twilio_sid=new_sid())
    assert await arq_redis.zrem(arq_redis.default_queue_name, str(first)) == 1
    await tasks.sweep(ctx)

    assert value("sms_queue_depth") == 1
    assert value("sms_messages_due") == 1


def test_a_sampled_gauge_is_exported_only_while_fresh() -> None:
    clock = [1000.0]
    registry = CollectorRegistry()
    gauge = SampledGauge(
        "sms_test_sampled", "test", fresh_for_seconds=60, registry=registry, clock=lambda: clock[0]
    )
    assert registry.get_sample_value("sms_test_sampled") is None  # never sampled here

    gauge.set(7)
    clock[0] += 60
    assert registry.get_sample_value("sms_test_sampled") == 7
    clock[0] += 1
    assert registry.get_sample_value("sms_test_sampled") is None  # another process's turn now


# --- rate-limit refusals ------------------------------------------------------------------------


async def test_code_requests_over_a_limit_count_a_refusal_under_the_limits_name(
    client: httpx.AsyncClient,
    make_api_key: MakeKey,
    redis_client: redis.asyncio.Redis,
    cipher: PhoneCipher,
) -> None:
    # A user and a number of this test's own: the test Redis may be shared with other runs.
    user = f"rita-{uuid.uuid4().hex}"
    number = f"+1415555{random.randrange(2000, 3000)}"
    cooldown = f"ratelimit:otp:cooldown:two_factor:{cipher.blind_index(number).hex()}"
    manager = await make_api_key(Scope.USERS_WRITE)
    body = {"phone_number": number, "phone_verified": True}
    assert (await client.put(f"/api/users/{user}", json=body, headers=manager)).status_code == 201
    refused_before = total("sms_rate_limited_total")
    reading = Reading(
        ("sms_rate_limited_total", {"limit": "otp_cooldown"}),
        ("sms_rate_limited_total", {"limit": "otp_number"}),
        messages("queued", "one_time_code"),
    )

    async def request_code() -> int:
        response = await client.post("/api/sms/send-2fa", headers=as_user(user))
        return response.status_code

    assert [await request_code(), await request_code()] == [202, 429]  # within the cooldown
    assert reading.moved() == [1, 0, 1]

    for _ in range(4):  # the number's other four codes of ten minutes, cooldowns forgotten
        assert await redis_client.delete(cooldown) == 1
        assert await request_code() == 202
    assert await redis_client.delete(cooldown) == 1
    assert await request_code() == 429

    assert reading.moved() == [1, 1, 5]
    assert total("sms_rate_limited_total") - refused_before == 2


# --- where operators read them ------------------------------------------------------------------


API_METRICS = (
    "sms_messages_total",
    "sms_twilio_request_seconds",
    "sms_twilio_errors_total",
    "sms_callback_lag_seconds",
    "sms_rate_limited_total",
    "sms_http_requests_total",
)
WORKER_METRICS = (
    "sms_messages_total",
    "sms_twilio_request_seconds",
    "sms_twilio_errors_total",
    "sms_send_lateness_seconds",
    "sms_queue_depth",
    "sms_messages_due",
)


async def test_get_metrics_shows_the_names_and_no_number_or_sid(
    client: httpx.AsyncClient,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    sid = new_sid()
    await add_message(
        sessionmaker, cipher, status="sending", twilio_sid=sid, attempts=1, last_attempt_at=now()
    )
    await post_callback(client, settings, sid, "delivered")

    response = await client.get("/metrics")

    assert response.status_code == 200
    types = {line.split()[2] for line in response.text.splitlines() if line.startswith("# TYPE")}
    assert set(API_METRICS) <= types
    assert 'sms_callback_lag_seconds_count{status="delivered"}' in response.text
    assert sid not in response.text
    assert TO not in response.text
    assert TO.removeprefix("+") not in response.text


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")
async def test_the_worker_serves_its_metrics_on_worker_metrics_port_and_stops(
    settings: Settings,
) -> None:
    port = _free_port()
    ctx: dict[str, Any] = {"settings": settings.model_copy(update={"worker_metrics_port": port})}
    await startup(ctx)
    try:
        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://127.0.0.1:{port}/metrics")
    finally:
        await shutdown(ctx)

    assert response.status_code == 200
    types = {line.split()[2] for line in response.text.splitlines() if line.startswith("# TYPE")}
    assert set(WORKER_METRICS) <= types
    with pytest.raises(httpx.ConnectError):  # stopped with the worker
        async with httpx.AsyncClient() as http:
            await http.get(f"http://127.0.0.1:{port}/metrics")

    # Unset (the default): nothing is served.
    quiet: dict[str, Any] = {"settings": settings}
    await startup(quiet)
    await shutdown(quiet)
    assert "stop_metrics" not in quiet
