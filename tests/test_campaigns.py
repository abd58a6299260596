"""Bulk campaigns (POST /api/sms/bulk-send and /api/sms/bulk/{id}): the estimate and who is
left out and why, the rows written and the chunk jobs queued, quiet hours, sending a chunk
through the outbox with bounded concurrency, pause, resume and cancel, limits, scopes and
Idempotency-Key. Twilio is respx; PostgreSQL and Redis are real."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import httpx
import pytest
import redis.asyncio
import respx
import time_machine
from arq.connections import ArqRedis
from fastapi import FastAPI
from sqlalchemy import delete, event, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from app.auth.principal import Principal, Scope
from app.campaigns import chunks, service
from app.campaigns import repository as campaigns_repository
from app.campaigns.chunks import BUSY_RETRY_SECONDS, CHUNKS_AT_ONCE, CampaignSender
from app.campaigns.models import Campaign
from app.campaigns.schemas import BulkSendRequest
from app.core.crypto import PhoneCipher
from app.core.database import create_sessionmaker, transaction
from app.core.deps import get_sessionmaker
from app.core.redis import create_redis
from app.core.settings import Settings
from app.main import create_app
from app.messages.models import Message, MessageEvent
from app.optouts.service import opt_out
from app.outbox import repository as outbox_repository
from app.outbox.service import Outbox, Outcome
from app.twilio.client import TwilioClient
from tests.sending_support import created, new_sid, twilio_base
from tests.test_messages_api import assert_problem, put_user

MakeKey = Callable[..., Awaitable[dict[str, str]]]
Json = dict[str, Any]

BULK = "/api/sms/bulk-send"
CHUNK_SIZE = 2
PARIS = ZoneInfo("Europe/Paris")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")
# Noon in California (and 21:00 in Paris, which is night there).
CALIFORNIA_NOON = datetime(2025, 1, 15, 12, 0, tzinfo=LOS_ANGELES)
PARIS_23H = datetime(2025, 1, 15, 23, 0, tzinfo=PARIS)
PARIS_8H = datetime(2025, 1, 16, 8, 0, tzinfo=PARIS)
OFFER = "Spring sale: 20% off every haircut this week. Reply STOP to opt out."


def numbers(count: int, start: int = 100) -> list[str]:
    return [f"+1415555{n:04d}" for n in range(start, start + count)]


@pytest.fixture(autouse=True)
def california_noon() -> Iterator[None]:
    """The clock starts at a Californian noon and runs: Californian numbers are never in their
    quiet hours, and messages are due by the database's clock (the test transaction's start)
    and valid (10 h) by the outbox's."""
    with time_machine.travel(CALIFORNIA_NOON, tick=True):
        yield


@pytest.fixture
def bulk_settings(settings: Settings) -> Settings:
    """Chunks of 2 (a few messages make several chunk jobs), bodies big enough for 100,001
    numbers."""
    return settings.model_copy(
        update={
            "campaign_chunk_size": CHUNK_SIZE,
            "campaign_parallel_chunks": 3,
            "max_request_body_bytes": 4 * 1024 * 1024,
        }
    )


@pytest.fixture
def app(bulk_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> FastAPI:
    application = create_app(bulk_settings)
    application.dependency_overrides[get_sessionmaker] = lambda: sessionmaker
    return application


@pytest.fixture
async def marketer(make_api_key: MakeKey) -> dict[str, str]:
    return await make_api_key(Scope.SMS_BULK, name="marketing")


@pytest.fixture
async def manager(make_api_key: MakeKey) -> dict[str, str]:
    return await make_api_key(Scope.USERS_WRITE, name="accounts")


@pytest.fixture
async def queue(
    redis_client: redis.asyncio.Redis, bulk_settings: Settings
) -> AsyncIterator[ArqRedis]:
    """arq's pool on the test Redis (emptied before and after by `redis_client`)."""
    pool = await create_redis(bulk_settings)
    yield pool
    await pool.aclose()


@pytest.fixture
def twilio_api(settings: Settings) -> Iterator[respx.MockRouter]:
    """Twilio, as respx: any request without a route fails the test."""
    with respx.mock(base_url=twilio_base(settings), assert_all_called=False) as router:
        yield router


@pytest.fixture
def sender(
    bulk_settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    twilio: TwilioClient,
    queue: ArqRedis,
) -> CampaignSender:
    """A worker's campaign sender on the test's transaction: one connection, so one message
    in flight (concurrency has a test of its own, on real connections)."""
    one_at_a_time = bulk_settings.model_copy(update={"campaign_concurrency": 1})
    outbox = Outbox(one_at_a_time, sessionmaker, cipher, twilio)
    sent = CampaignSender.build(one_at_a_time, sessionmaker, queue, outbox)
    sent.states.ttl = 0  # every check reads the database: the tests see each change at once
    return sent


async def bulk(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    expect: int = 202,
    *,
    at: datetime = CALIFORNIA_NOON,
    **payload: Any,
) -> Json:
    """POST bulk-send with the clock at `at`."""
    with time_machine.travel(at, tick=False):
        response = await client.post(BULK, json=payload, headers=headers)
    assert response.status_code == expect, response.text
    answer: Json = response.json()
    return answer


async def campaign_messages(session: AsyncSession, campaign_id: str | uuid.UUID) -> list[Message]:
    statement = (
        select(Message)
        .where(Message.campaign_id == uuid.UUID(str(campaign_id)))
        .order_by(Message.campaign_chunk, Message.id)
        .execution_options(populate_existing=True)
    )
    return list((await session.execute(statement)).scalars())


async def queued_jobs(queue: ArqRedis) -> dict[str, float]:
    """Job id → score (ms) of the chunk jobs on arq's queue."""
    rows = await queue.zrange(queue.default_queue_name, 0, -1, withscores=True)
    return {job.decode(): score for job, score in rows if job.decode().startswith("campaign:")}


def sent_to(route: respx.Route) -> list[str]:
    return [dict(parse_qsl(call.request.content.decode()))["To"] for call in route.calls]


# --- the estimate -------------------------------------------------------------------------


async def test_a_dry_run_estimates_recipients_reasons_segments_and_cost_and_stores_nothing(
    client: httpx.AsyncClient,
    session: AsyncSession,
    manager: dict[str, str],
    marketer: dict[str, str],
    cipher: PhoneCipher,
) -> None:
    async def customer(user_id: str, phone: str | None, marketing: bool, **extra: Any) -> None:
        await put_user(client, manager, user_id, phone=phone, **extra)
        response = await client.put(
            f"/api/users/{user_id}/preferences", json={"marketing": marketing}, headers=manager
        )
        assert response.status_code == 200, response.text

    await customer("ok", "+14155550001", True, time_zone="America/Los_Angeles")
    await customer("marketing-off", "+14155550002", False)  # off by default, too
    await customer("sms-off", "+14155550003", True)
    await client.put("/api/users/sms-off/preferences", json={"sms_enabled": False}, headers=manager)
    await customer("no-phone", None, True)
    await customer("unverified", "+14155550004", True, verified=False)
    await customer("stopped", "+14155550005", True)
    await opt_out(session, cipher.blind_index("+14155550005"), source="test")
    await opt_out(session, cipher.blind_index("+14155550099"), source="test")
    await session.commit()
    body = "x" * 200  # GSM-7, 2 segments of 153
    before = await session.scalar(select(func.count()).select_from(Message))

    answer = await bulk(
        client,
        marketer,
        200,
        body=body,
        dry_run=True,
        recipients={
            "user_ids": [
                "ok", "marketing-off", "sms-off", "no-phone", "unverified", "stopped",
                "ghost", "ok",
            ],
            "numbers": [
                "+14155550100",
                "+1 (415) 555-0100",  # the same number again
                "+14155550001",  # the user "ok"'s number: already in
                "12",
                "+18005550199",  # toll-free: no SMS
                "+14155550099",  # STOP
                {"to": "+14155550101", "data": {}},
            ],
        },
    )  # fmt: skip

    assert answer["id"] is None
    assert answer["status"] is None
    assert answer["counts"] is None
    assert answer["dry_run"] is True
    estimate = answer["estimate"]
    assert estimate["requested"] == 15
    assert estimate["recipients"] == 3  # ok, +14155550100, +14155550101
    assert estimate["held_for_quiet_hours"] == 0
    assert estimate["suppressed"] == {
        "opted_out": 2,
        "preference_off": 1,
        "sms_disabled": 1,
        "no_phone_number": 1,
        "phone_not_verified": 1,
        "country_not_allowed": 0,
        "invalid_number": 2,
        "duplicate": 3,
        "unknown_user": 1,
    }
    assert estimate["segments"] == 6
    assert Decimal(estimate["estimated_cost"]) == Decimal("0.0083") * 6
    assert estimate["currency"] == "USD"
    assert estimate["invalid_numbers"] == [
        {"index": 3, "reason": "too_short"},
        {"index": 4, "reason": "not_sms_capable"},
    ]
    assert await session.scalar(select(func.count()).select_from(Campaign)) == 0
    assert await session.scalar(select(func.count()).select_from(Message)) == before


# --- a real run ---------------------------------------------------------------------------


async def test_a_campaign_writes_its_rows_and_queues_one_job_per_chunk(
    client: httpx.AsyncClient,
    session: AsyncSession,
    marketer: dict[str, str],
    queue: ArqRedis,
    cipher: PhoneCipher,
) -> None:
    await opt_out(session, cipher.blind_index("+14155550199"), source="test")
    await session.commit()
    to = numbers(5)

    answer = await bulk(
        client,
        marketer,
        body=OFFER,
        reference="spring-sale",
        recipients={"numbers": [*to, "+14155550199"]},
    )

    assert answer["status"] == "running"
    assert answer["counts"] == {
        "queued": 5, "scheduled": 0, "sending": 0, "sent": 0, "delivered": 0,
        "undelivered": 0, "failed": 0, "suppressed": 1, "cancelled": 0, "total": 6,
    }  # fmt: skip
    rows = await campaign_messages(session, answer["id"])
    sendable = [row for row in rows if row.status == "queued"]
    assert sorted(cipher.decrypt(row.to_encrypted or b"") for row in sendable) == to
    assert {row.category for row in rows} == {"marketing"}
    assert {row.body for row in rows} == {OFFER}
    assert {row.reference for row in rows} == {"spring-sale"}
    assert sorted(row.campaign_chunk for row in sendable) == [0, 0, 1, 1, 2]  # type: ignore[type-var]
    [stopped] = [row for row in rows if row.status == "suppressed"]
    assert (stopped.suppression_reason, stopped.campaign_chunk) == ("opted_out", None)
    assert stopped.final_at is not None
    events = (
        await session.execute(
            select(MessageEvent.status, MessageEvent.source, func.count())
            .where(MessageEvent.message_id.in_([row.id for row in rows]))
            .group_by(MessageEvent.status, MessageEvent.source)
        )
    ).all()
    assert sorted(tuple(row) for row in events) == [("queued", "api", 5), ("suppressed", "api", 1)]
    # CAMPAIGN_PARALLEL_CHUNKS (3) chunk jobs queued, each named by its chunk.
    jobs = await queued_jobs(queue)
    assert set(jobs) == {f"campaign:{answer['id']}:{chunk}" for chunk in range(3)}
    # The campaign as GET shows it.
    shown = await client.get(f"/api/sms/bulk/{answer['id']}", headers=marketer)
    assert shown.status_code == 200, shown.text
    assert shown.json() == answer


async def test_a_campaign_that_grows_the_table_by_a_tenth_refreshes_its_statistics(
    client: httpx.AsyncClient,
    session: AsyncSession,
    connection: AsyncConnection,
    marketer: dict[str, str],
    queue: ArqRedis,
) -> None:
    """ANALYZE in the campaign's transaction, so that its chunks' claims use the primary key
    from the first batch; not for a campaign too small to change the picture."""

    async def counted() -> float:
        found = await session.scalar(
            text("SELECT reltuples FROM pg_class WHERE oid = 'messages'::regclass")
        )
        return float(found)

    analyzed: list[str] = []

    def record(*args: Any) -> None:
        if str(args[2]).startswith("ANALYZE"):
            analyzed.append(str(args[2]))

    big = max(20, int(0.1 * max(await counted(), 0)) + 1)
    target = connection.sync_connection
    assert target is not None
    event.listen(target, "before_cursor_execute", record)
    try:
        await bulk(client, marketer, body=OFFER, recipients={"numbers": numbers(big)})
        assert analyzed == ["ANALYZE messages"]
        assert await counted() >= big

        await bulk(client, marketer, body=OFFER, recipients={"numbers": numbers(1, start=900)})
        assert analyzed == ["ANALYZE messages"]  # 1 row is not a tenth of the table
    finally:
        event.remove(target, "before_cursor_execute", record)


async def test_at_23h_in_paris_a_french_number_waits_until_8h_and_a_californian_goes_now(
    client: httpx.AsyncClient,
    session: AsyncSession,
    marketer: dict[str, str],
    queue: ArqRedis,
    cipher: PhoneCipher,
) -> None:
    answer = await bulk(
        client,
        marketer,
        at=PARIS_23H,
        body=OFFER,
        recipients={"numbers": ["+33612345678", "+14155550100"]},
    )

    assert answer["status"] == "running"
    assert answer["estimate"]["held_for_quiet_hours"] == 1
    assert (answer["counts"]["queued"], answer["counts"]["scheduled"]) == (1, 1)
    rows = {
        cipher.decrypt(row.to_encrypted or b""): row
        for row in await campaign_messages(session, answer["id"])
    }
    paris = rows["+33612345678"]
    assert paris.status == "scheduled"
    assert paris.send_at == PARIS_8H
    assert paris.next_attempt_at == PARIS_8H
    assert rows["+14155550100"].status == "queued"
    assert paris.campaign_chunk != rows["+14155550100"].campaign_chunk  # a chunk per due time
    jobs = await queued_jobs(queue)
    held_job = f"campaign:{answer['id']}:{paris.campaign_chunk}"
    assert jobs[held_job] == PARIS_8H.timestamp() * 1000  # deferred to the morning
    detail = await session.scalar(
        select(MessageEvent.detail).where(MessageEvent.message_id == paris.id)
    )
    assert detail == "held for the recipient's quiet hours"


async def test_a_campaign_whose_recipients_all_sleep_is_scheduled(
    client: httpx.AsyncClient, marketer: dict[str, str]
) -> None:
    answer = await bulk(
        client, marketer, at=PARIS_23H, body=OFFER, recipients={"numbers": ["+33612345678"]}
    )

    assert answer["status"] == "scheduled"
    assert answer["counts"]["scheduled"] == 1


async def test_a_user_in_paris_is_held_and_marketing_needs_the_preference_on(
    client: httpx.AsyncClient,
    session: AsyncSession,
    manager: dict[str, str],
    marketer: dict[str, str],
) -> None:
    await put_user(client, manager, "amelie", phone="+33612345679", time_zone="Europe/Paris")
    await client.put("/api/users/amelie/preferences", json={"marketing": True}, headers=manager)
    await put_user(client, manager, "bruno", phone="+33612345670")  # marketing off (default)

    answer = await bulk(
        client, marketer, at=PARIS_23H, body=OFFER, recipients={"user_ids": ["amelie", "bruno"]}
    )

    assert answer["counts"]["scheduled"] == 1
    assert answer["counts"]["suppressed"] == 1
    rows = await campaign_messages(session, answer["id"])
    by_status = {row.status: row for row in rows}
    assert by_status["scheduled"].send_at == PARIS_8H
    assert by_status["suppressed"].suppression_reason == "preference_off"


async def test_placeholders_are_filled_from_each_recipients_data_then_the_shared_data(
    client: httpx.AsyncClient, session: AsyncSession, marketer: dict[str, str]
) -> None:
    answer = await bulk(
        client,
        marketer,
        body="Hi {name}, {percent}% off with code {{SPRING}}",
        data={"name": "there", "percent": 20},
        recipients={
            "numbers": [
                {"to": "+14155550100", "data": {"name": "Ana"}},
                {"to": "+14155550101", "data": {"percent": 30}},
                "+14155550102",
            ]
        },
    )

    rows = await campaign_messages(session, answer["id"])
    assert sorted(row.body or "" for row in rows) == [
        "Hi Ana, 20% off with code {SPRING}",
        "Hi there, 20% off with code {SPRING}",
        "Hi there, 30% off with code {SPRING}",
    ]


async def test_a_missing_placeholder_value_or_a_stray_brace_is_422_and_stores_nothing(
    client: httpx.AsyncClient, session: AsyncSession, marketer: dict[str, str]
) -> None:
    missing = await client.post(
        BULK,
        json={
            "body": "Hi {name}, see you {day}",
            "data": {"day": "Monday"},
            "recipients": {
                "numbers": ["+14155550100", {"to": "+14155550101", "data": {"name": "Bo"}}]
            },
        },
        headers=marketer,
    )
    brace = await client.post(
        BULK,
        json={"body": "Use code {SPRING", "recipients": {"numbers": ["+14155550100"]}},
        headers=marketer,
    )

    problem = assert_problem(missing, 422, "missing_template_data")
    assert [error["field"] for error in problem["errors"]] == [
        "body.recipients.numbers.0.data.name"
    ]
    assert_problem(brace, 422, "validation_error")
    assert await session.scalar(select(func.count()).select_from(Campaign)) == 0


async def test_a_template_is_rendered_in_each_recipients_language(
    client: httpx.AsyncClient,
    session: AsyncSession,
    manager: dict[str, str],
    marketer: dict[str, str],
    cipher: PhoneCipher,
) -> None:
    await put_user(client, manager, "francoise", phone="+14155550200", locale="fr")
    await client.put("/api/users/francoise/preferences", json={"marketing": True}, headers=manager)
    event_data = {"service_name": "Haircut", "provider_name": "Studio K"}

    answer = await bulk(
        client,
        marketer,
        template="booking.reminder",
        data={**event_data, "starts_at": "2025-01-20T18:00:00Z"},
        locale="es",
        recipients={"user_ids": ["francoise"], "numbers": ["+14155550201"]},
    )

    rows = {
        cipher.decrypt(row.to_encrypted or b""): row
        for row in await campaign_messages(session, answer["id"])
    }
    assert {row.category for row in rows.values()} == {"marketing"}
    french, spanish = rows["+14155550200"].body or "", rows["+14155550201"].body or ""
    assert "Haircut" in french
    assert "Haircut" in spanish
    assert french != spanish
    assert "janv." in french  # a French date, in her zone (the number's)


# --- sending a chunk ----------------------------------------------------------------------


async def test_the_chunk_job_sends_its_messages_through_the_outbox_then_queues_the_next(
    client: httpx.AsyncClient,
    session: AsyncSession,
    marketer: dict[str, str],
    sender: CampaignSender,
    twilio_api: respx.MockRouter,
    queue: ArqRedis,
) -> None:
    create = twilio_api.post("/Messages.json").mock(side_effect=lambda _: created(new_sid()))
    answer = await bulk(client, marketer, body=OFFER, recipients={"numbers": numbers(7)})
    campaign_id = uuid.UUID(answer["id"])
    rows = await campaign_messages(session, campaign_id)
    first_chunk = sorted(row.id for row in rows if row.campaign_chunk == 0)
    assert set(await queued_jobs(queue)) == {f"campaign:{campaign_id}:{n}" for n in range(3)}

    report = await sender.send_chunk(campaign_id, 0)

    assert report.outcomes == {"accepted": 2}
    assert report.stopped is None
    assert create.call_count == 2
    sent = [row for row in await campaign_messages(session, campaign_id) if row.twilio_sid]
    assert sorted(row.id for row in sent) == first_chunk
    assert {row.status for row in sent} == {"sending"}  # Twilio has them; callbacks follow
    # Its end queued the next chunk with work: never more than 3 (CAMPAIGN_PARALLEL_CHUNKS)
    # waiting besides the one ending.
    assert set(await queued_jobs(queue)) == {f"campaign:{campaign_id}:{n}" for n in range(4)}
    shown = (await client.get(f"/api/sms/bulk/{campaign_id}", headers=marketer)).json()
    assert shown["status"] == "running"
    assert (shown["counts"]["sending"], shown["counts"]["queued"]) == (2, 5)

    for chunk in (1, 2, 3):
        await sender.send_chunk(campaign_id, chunk)

    assert sorted(sent_to(create)) == numbers(7)
    shown = (await client.get(f"/api/sms/bulk/{campaign_id}", headers=marketer)).json()
    assert shown["counts"]["sending"] == 7
    assert shown["status"] == "completed"  # nothing left to hand to Twilio
    state = await session.scalar(select(Campaign.state).where(Campaign.id == campaign_id))
    assert state == "completed"


async def test_a_worker_running_two_chunks_puts_a_third_back_for_another_worker(
    client: httpx.AsyncClient,
    session: AsyncSession,
    marketer: dict[str, str],
    sender: CampaignSender,
    twilio_api: respx.MockRouter,
    queue: ArqRedis,
) -> None:
    create = twilio_api.post("/Messages.json").mock(side_effect=lambda _: created(new_sid()))
    answer = await bulk(client, marketer, body=OFFER, recipients={"numbers": numbers(4)})
    campaign_id = uuid.UUID(answer["id"])
    sender.running = CHUNKS_AT_ONCE  # two chunk jobs under way in this worker

    report = await sender.send_chunk(campaign_id, 0)

    assert report.stopped == "busy"
    assert report.again_in == BUSY_RETRY_SECONDS  # back on the queue, for any worker
    assert create.call_count == 0
    statuses = {row.status for row in await campaign_messages(session, campaign_id)}
    assert statuses == {"queued"}


@dataclass
class LiveCampaign:
    """A campaign committed on real connections, not in the test's transaction: chunk jobs
    run batches on several connections at once. Three creates at most in flight."""

    sessionmaker: async_sessionmaker[AsyncSession]
    settings: Settings
    id: uuid.UUID

    def sender(self, cipher: PhoneCipher, twilio: TwilioClient, queue: ArqRedis) -> CampaignSender:
        outbox = Outbox(self.settings, self.sessionmaker, cipher, twilio)
        return CampaignSender.build(self.settings, self.sessionmaker, queue, outbox)

    async def claimed(self) -> int:
        async with self.sessionmaker() as session:
            statement = select(func.count()).where(
                Message.campaign_id == self.id, Message.status == "sending"
            )
            return int((await session.execute(statement)).scalar_one())


@asynccontextmanager
async def live_campaign(
    settings: Settings, engine: AsyncEngine, cipher: PhoneCipher, to: list[str], *, chunk_size: int
) -> AsyncIterator[LiveCampaign]:
    live = create_sessionmaker(engine)
    limited = settings.model_copy(
        update={"campaign_concurrency": 3, "campaign_chunk_size": chunk_size}
    )
    principal = Principal("api_key", "live-campaign-test", "t", frozenset({Scope.SMS_BULK}))
    request = BulkSendRequest.model_validate({"body": OFFER, "recipients": {"numbers": to}})
    async with transaction(live) as session:
        launch = await service.create(session, cipher, limited, principal, request)
    assert launch.campaign.id is not None
    try:
        yield LiveCampaign(live, limited, launch.campaign.id)
    finally:
        async with live() as cleanup:
            await cleanup.execute(delete(Message).where(Message.campaign_id == launch.campaign.id))
            await cleanup.execute(delete(Campaign).where(Campaign.id == launch.campaign.id))
            await cleanup.commit()


async def test_a_chunk_job_sends_at_most_campaign_concurrency_messages_at_once(
    settings: Settings,
    engine: AsyncEngine,
    cipher: PhoneCipher,
    twilio: TwilioClient,
    queue: ArqRedis,
) -> None:
    """On real connections, committed: the bound is the worker's, across its chunk jobs."""
    in_flight, most = 0, 0

    async def slow_twilio(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return created(new_sid())

    to = numbers(20, start=300)
    async with live_campaign(settings, engine, cipher, to, chunk_size=10) as campaign:
        with respx.mock(base_url=twilio_base(settings)) as twilio_api:
            create = twilio_api.post("/Messages.json").mock(side_effect=slow_twilio)
            sender = campaign.sender(cipher, twilio, queue)
            reports = await asyncio.gather(
                sender.send_chunk(campaign.id, 0), sender.send_chunk(campaign.id, 1)
            )

    assert [report.outcomes for report in reports] == [{"accepted": 10}, {"accepted": 10}]
    assert most == 3
    assert sorted(sent_to(create)) == to


async def test_a_chunk_claims_its_next_batches_while_the_first_ones_creates_are_at_twilio(
    settings: Settings,
    engine: AsyncEngine,
    cipher: PhoneCipher,
    twilio: TwilioClient,
    queue: ArqRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With Twilio holding every answer, the chunk's three batches are all claimed, not just
    the first: its creates never wait on the next batch's claim."""
    monkeypatch.setattr(chunks, "BATCH_SIZE", 5)
    answer = asyncio.Event()

    async def held_twilio(request: httpx.Request) -> httpx.Response:
        await answer.wait()
        return created(new_sid())

    to = numbers(15, start=400)
    async with live_campaign(settings, engine, cipher, to, chunk_size=15) as campaign:
        with respx.mock(base_url=twilio_base(settings)) as twilio_api:
            create = twilio_api.post("/Messages.json").mock(side_effect=held_twilio)
            chunk = asyncio.create_task(
                campaign.sender(cipher, twilio, queue).send_chunk(campaign.id, 0)
            )
            for _ in range(500):  # up to 5 s
                if await campaign.claimed() == 15:
                    break
                await asyncio.sleep(0.01)
            all_claimed = await campaign.claimed()
            answer.set()
            report = await chunk

    assert all_claimed == 15  # one batch at a time, it stayed at 5
    assert report.outcomes == {"accepted": 15}
    assert sorted(sent_to(create)) == to


async def test_a_batch_that_fails_its_state_check_leaves_the_chunk_to_finish_the_others(
    settings: Settings,
    engine: AsyncEngine,
    cipher: PhoneCipher,
    twilio: TwilioClient,
    queue: ArqRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first batch's check of the campaign's state fails: the job neither fails while its
    other batches go on sending, nor sends anything after it ends."""
    monkeypatch.setattr(chunks, "BATCH_SIZE", 5)
    async with live_campaign(
        settings, engine, cipher, numbers(15, start=500), chunk_size=15
    ) as campaign:
        with respx.mock(base_url=twilio_base(settings)) as twilio_api:
            create = twilio_api.post("/Messages.json").mock(
                side_effect=lambda _: created(new_sid())
            )
            sender = campaign.sender(cipher, twilio, queue)
            sender.states.ttl = 0
            checks = 0
            read_state = sender.states.state

            async def flaky_state(campaign_id: uuid.UUID) -> str | None:
                nonlocal checks
                checks += 1
                if checks == 2:  # the first batch's, after the chunk's own
                    raise ConnectionError("the database went away")
                return await read_state(campaign_id)

            monkeypatch.setattr(sender.states, "state", flaky_state)
            report = await sender.send_chunk(campaign.id, 0)
            sent_by_then = len(create.calls)
            await asyncio.sleep(0.2)

    assert report.outcomes == {"error": 5, "accepted": 10}
    assert len(create.calls) == sent_by_then == 10


async def test_a_later_send_at_schedules_the_campaign_and_its_chunks_release_it_then(
    client: httpx.AsyncClient,
    session: AsyncSession,
    marketer: dict[str, str],
    sender: CampaignSender,
    twilio_api: respx.MockRouter,
    queue: ArqRedis,
) -> None:
    create = twilio_api.post("/Messages.json").mock(side_effect=lambda _: created(new_sid()))
    send_at = CALIFORNIA_NOON + timedelta(hours=1)
    answer = await bulk(
        client,
        marketer,
        body=OFFER,
        send_at=send_at.isoformat(),
        recipients={"numbers": numbers(2)},
    )
    campaign_id = uuid.UUID(answer["id"])

    assert answer["status"] == "scheduled"
    assert answer["counts"]["scheduled"] == 2
    jobs = await queued_jobs(queue)
    assert jobs == {f"campaign:{campaign_id}:0": send_at.timestamp() * 1000}
    early = await sender.send_chunk(campaign_id, 0)  # before its time: nothing goes
    assert (early.outcomes, create.call_count) == ({}, 0)

    with time_machine.travel(send_at + timedelta(seconds=1), tick=False):
        report = await sender.send_chunk(campaign_id, 0)

    assert report.outcomes == {"accepted": 2}
    rows = await campaign_messages(session, campaign_id)
    history = (
        await session.execute(
            select(MessageEvent.status, MessageEvent.source)
            .where(MessageEvent.message_id == rows[0].id)
            .order_by(MessageEvent.id)
        )
    ).all()
    assert [tuple(event) for event in history] == [
        ("scheduled", "api"),
        ("queued", "worker"),
        ("sending", "worker"),
        ("sending", "worker"),
    ]


async def test_a_message_twilio_refuses_for_now_becomes_a_single_retry_job(
    client: httpx.AsyncClient,
    session: AsyncSession,
    marketer: dict[str, str],
    sender: CampaignSender,
    twilio_api: respx.MockRouter,
    queue: ArqRedis,
) -> None:
    twilio_api.post("/Messages.json").mock(
        return_value=httpx.Response(429, json={"code": 20429, "message": "Too Many Requests"})
    )
    answer = await bulk(client, marketer, body=OFFER, recipients={"numbers": numbers(1)})
    [message] = await campaign_messages(session, answer["id"])

    report = await sender.send_chunk(uuid.UUID(answer["id"]), 0)

    assert report.outcomes == {"retry": 1}
    job = await queue.zscore(queue.default_queue_name, str(message.id))
    assert job is not None  # the outbox's own job (its id, the message's), deferred
    retried = await session.get(Message, message.id, populate_existing=True)
    assert retried is not None
    assert (retried.status, retried.attempts, retried.twilio_sid) == ("sending", 1, None)
    # No longer fresh: a single message again, which the outbox's sweep takes if Redis loses
    # that job (its retry time has come by the database's clock).
    async with transaction(sender.sessionmaker) as check:
        due = await outbox_repository.due(check, limit=10)
    assert [item.id for item in due] == [message.id]


# --- pause, resume, cancel ----------------------------------------------------------------


async def test_pause_refuses_claims_and_stops_the_chunk_then_resume_sends_the_rest(
    client: httpx.AsyncClient,
    session: AsyncSession,
    marketer: dict[str, str],
    sender: CampaignSender,
    outbox: Outbox,
    twilio_api: respx.MockRouter,
    queue: ArqRedis,
) -> None:
    create = twilio_api.post("/Messages.json").mock(side_effect=lambda _: created(new_sid()))
    answer = await bulk(client, marketer, body=OFFER, recipients={"numbers": numbers(6)})
    campaign_id = answer["id"]
    rows = await campaign_messages(session, campaign_id)

    paused = await client.post(f"/api/sms/bulk/{campaign_id}/pause", headers=marketer)
    again = await client.post(f"/api/sms/bulk/{campaign_id}/pause", headers=marketer)

    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused"
    assert again.status_code == 200
    assert (await outbox.send(rows[0].id)).outcome is Outcome.NOT_CLAIMED
    report = await sender.send_chunk(uuid.UUID(campaign_id), 0)
    assert report.stopped == "paused"
    assert create.call_count == 0
    # The outbox's sweep does not queue them one by one either.
    async with transaction(sender.sessionmaker) as check:
        due = await outbox_repository.due(check, limit=100)
    assert not {item.id for item in due} & {row.id for row in rows}

    await queue.flushdb()
    resumed = await client.post(f"/api/sms/bulk/{campaign_id}/resume", headers=marketer)

    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "running"
    assert set(await queued_jobs(queue)) == {f"campaign:{campaign_id}:{n}" for n in range(3)}
    for chunk in range(3):
        await sender.send_chunk(uuid.UUID(campaign_id), chunk)
    assert sorted(sent_to(create)) == numbers(6)
    shown = (await client.get(f"/api/sms/bulk/{campaign_id}", headers=marketer)).json()
    assert shown["status"] == "completed"
    assert shown["counts"]["sending"] == 6


async def test_a_pause_during_a_chunk_stops_it_before_the_next_message(
    client: httpx.AsyncClient,
    session: AsyncSession,
    marketer: dict[str, str],
    sender: CampaignSender,
    sessionmaker: async_sessionmaker[AsyncSession],
    twilio_api: respx.MockRouter,
    bulk_settings: Settings,
) -> None:
    sender.settings = bulk_settings.model_copy(
        update={"campaign_chunk_size": 6, "campaign_concurrency": 1}
    )
    answer = await bulk(client, marketer, body=OFFER, recipients={"numbers": numbers(2)})
    campaign_id = uuid.UUID(answer["id"])

    async def twilio_then_pause(request: httpx.Request) -> httpx.Response:
        async with transaction(sessionmaker) as pausing:
            await campaigns_repository.set_state(pausing, campaign_id, "paused")  # type: ignore[arg-type]
        return created(new_sid())

    create = twilio_api.post("/Messages.json").mock(side_effect=twilio_then_pause)

    report = await sender.send_chunk(campaign_id, 0)

    assert create.call_count == 1
    assert report.stopped == "paused"
    assert report.outcomes == {"accepted": 1}


async def test_cancel_cancels_what_twilio_does_not_have_and_the_counts_add_up(
    client: httpx.AsyncClient,
    session: AsyncSession,
    marketer: dict[str, str],
    sender: CampaignSender,
    outbox: Outbox,
    twilio_api: respx.MockRouter,
) -> None:
    twilio_api.post("/Messages.json").mock(side_effect=lambda _: created(new_sid()))
    answer = await bulk(client, marketer, body=OFFER, recipients={"numbers": [*numbers(5), "12"]})
    campaign_id = answer["id"]
    await sender.send_chunk(uuid.UUID(campaign_id), 0)  # two handed to Twilio

    cancelled = await client.post(f"/api/sms/bulk/{campaign_id}/cancel", headers=marketer)

    assert cancelled.status_code == 200, cancelled.text
    shown = cancelled.json()
    assert shown["status"] == "cancelled"
    assert shown["finished_at"] is not None
    assert shown["counts"] == {
        "queued": 0, "scheduled": 0, "sending": 2, "sent": 0, "delivered": 0,
        "undelivered": 0, "failed": 0, "suppressed": 0, "cancelled": 3, "total": 5,
    }  # fmt: skip
    rows = await campaign_messages(session, campaign_id)
    cancelled_ids = [row.id for row in rows if row.status == "cancelled"]
    details = (
        await session.execute(
            select(MessageEvent.detail).where(
                MessageEvent.message_id.in_(cancelled_ids), MessageEvent.status == "cancelled"
            )
        )
    ).scalars()
    assert list(details) == ["campaign cancelled"] * 3
    assert (await outbox.send(cancelled_ids[0])).outcome is Outcome.NOT_CLAIMED
    assert (await sender.send_chunk(uuid.UUID(campaign_id), 1)).stopped == "cancelled"
    # Idempotent; a cancelled campaign cannot be resumed or paused.
    again = await client.post(f"/api/sms/bulk/{campaign_id}/cancel", headers=marketer)
    assert again.status_code == 200
    assert again.json()["counts"] == shown["counts"]
    resume = await client.post(f"/api/sms/bulk/{campaign_id}/resume", headers=marketer)
    pause = await client.post(f"/api/sms/bulk/{campaign_id}/pause", headers=marketer)
    assert_problem(resume, 409, "campaign_finished")
    assert_problem(pause, 409, "campaign_finished")


async def test_a_completed_campaign_cannot_be_paused_or_cancelled(
    client: httpx.AsyncClient, session: AsyncSession, marketer: dict[str, str], cipher: PhoneCipher
) -> None:
    await opt_out(session, cipher.blind_index("+14155550100"), source="test")
    await session.commit()
    answer = await bulk(client, marketer, body=OFFER, recipients={"numbers": ["+14155550100"]})

    assert answer["status"] == "completed"  # nobody to send to
    for action in ("pause", "cancel", "resume"):
        response = await client.post(f"/api/sms/bulk/{answer['id']}/{action}", headers=marketer)
        assert_problem(response, 409, "campaign_finished")


# --- the sweeps ---------------------------------------------------------------------------


async def test_the_campaign_sweep_queues_lost_chunks_again_and_the_outbox_sweep_leaves_them(
    client: httpx.AsyncClient,
    marketer: dict[str, str],
    sender: CampaignSender,
    queue: ArqRedis,
    session: AsyncSession,
) -> None:
    answer = await bulk(client, marketer, body=OFFER, recipients={"numbers": numbers(3)})
    await queue.flushdb()  # Redis lost every job

    async with transaction(sender.sessionmaker) as check:
        due = await outbox_repository.due(check, limit=100)
    report = await sender.sweep()

    rows = await campaign_messages(session, answer["id"])
    assert not {item.id for item in due} & {row.id for row in rows}  # not one by one
    assert report["chunks_enqueued"] >= 2
    ours = {job for job in await queued_jobs(queue) if answer["id"] in job}
    assert ours == {f"campaign:{answer['id']}:{n}" for n in (0, 1)}


# --- limits, scopes, idempotency ----------------------------------------------------------


async def test_more_than_100000_recipients_is_422(
    client: httpx.AsyncClient, session: AsyncSession, marketer: dict[str, str]
) -> None:
    too_many = [f"+1415{n:07d}" for n in range(100_001)]

    response = await client.post(
        BULK, json={"body": OFFER, "recipients": {"numbers": too_many}}, headers=marketer
    )
    mixed = await client.post(
        BULK,
        json={
            "body": OFFER,
            "recipients": {"numbers": too_many[:50_001], "user_ids": too_many[:50_000]},
        },
        headers=marketer,
    )

    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"][0]["field"] == "body.recipients.numbers"
    assert_problem(mixed, 422, "validation_error")
    assert await session.scalar(select(func.count()).select_from(Campaign)) == 0


async def test_a_topic_that_makes_more_than_100000_is_422(
    client: httpx.AsyncClient, session: AsyncSession, marketer: dict[str, str]
) -> None:
    await session.execute(
        text(
            "WITH made AS (INSERT INTO users (id, external_id) SELECT gen_random_uuid(), "
            "'member-' || n FROM generate_series(1, 100000) AS n RETURNING id) "
            "INSERT INTO topic_subscriptions (topic, user_id) SELECT 'everyone', id FROM made"
        )
    )
    await session.commit()

    response = await client.post(
        BULK,
        json={"body": OFFER, "recipients": {"topic": "everyone", "numbers": ["+14155550100"]}},
        headers=marketer,
    )

    assert_problem(response, 422, "too_many_recipients")


async def test_bulk_needs_the_sms_bulk_scope_and_each_service_sees_its_own(
    client: httpx.AsyncClient, make_api_key: MakeKey, marketer: dict[str, str]
) -> None:
    sender_only = await make_api_key(Scope.SMS_SEND)
    other = await make_api_key(Scope.SMS_BULK, name="other-team")
    reader = await make_api_key(Scope.SMS_BULK, Scope.SMS_READ, name="reporting")
    payload: Json = {"body": OFFER, "recipients": {"numbers": ["+14155550100"]}}

    refused = await client.post(BULK, json=payload, headers=sender_only)
    answer = await bulk(client, marketer, body=OFFER, recipients=payload["recipients"])
    path = f"/api/sms/bulk/{answer['id']}"

    assert_problem(refused, 403, "missing_scope")
    assert_problem(await client.get(path, headers=sender_only), 403, "missing_scope")
    assert_problem(await client.get(path, headers=other), 404, "campaign_not_found")
    assert_problem(await client.post(f"{path}/pause", headers=other), 404, "campaign_not_found")
    assert (await client.get(path, headers=reader)).status_code == 200
    assert_problem(await client.post(f"{path}/cancel", headers=reader), 404, "campaign_not_found")
    assert_problem(
        await client.get(f"/api/sms/bulk/{uuid.uuid4()}", headers=marketer),
        404,
        "campaign_not_found",
    )


async def test_an_idempotency_key_replays_the_first_answer(
    client: httpx.AsyncClient,
    session: AsyncSession,
    marketer: dict[str, str],
) -> None:
    headers = {**marketer, "Idempotency-Key": "spring-sale-1"}
    payload = {"body": OFFER, "recipients": {"numbers": numbers(3)}}

    first = await client.post(BULK, json=payload, headers=headers)
    replay = await client.post(BULK, json=payload, headers=headers)
    other = await client.post(BULK, json={**payload, "body": "Another offer"}, headers=headers)

    assert first.status_code == replay.status_code == 202
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert_problem(other, 422, "idempotency_key_reused")
    assert await session.scalar(select(func.count()).select_from(Campaign)) == 1
    assert len(await campaign_messages(session, first.json()["id"])) == 3
