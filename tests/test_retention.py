"""Retention (SPEC §9) against frozen time: bodies erased after 7 days, messages deleted after
365 with their counts kept per day, in batches, idempotent, from the cron and the CLI.

Rows are made years back (NOW is in 2020), so the rows other tests commit (made today) are
never old enough to be touched: every count below is exact."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import time_machine
from arq.connections import ArqRedis
from arq.worker import Worker
from click.testing import CliRunner
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from app.analytics.models import MessageDailyStats
from app.auth.principal import Scope
from app.campaigns.chunks import chunk_timeout_seconds
from app.cli import cli
from app.codes.models import Verification
from app.core.crypto import PhoneCipher
from app.core.database import create_sessionmaker, transaction
from app.core.settings import Settings
from app.idempotency.models import IdempotencyKey
from app.messages.models import Message, MessageEvent
from app.messages.repository import add_events
from app.messages.status import Status
from app.notifications.models import Notification
from app.retention import repository
from app.retention.service import Report, apply_retention
from app.retention.tasks import CONTINUE_JOB, RETENTION_TIMEOUT_SECONDS, run_retention
from app.users.models import User
from app.worker import worker_settings
from tests.sending_support import add_message, new_sid

NOW = datetime(2020, 6, 15, 12, 0, tzinfo=UTC)
# 2020 is a leap year: 365 days before NOW is 2019-06-16 12:00.
METADATA_CUTOFF = datetime(2019, 6, 16, 12, 0, tzinfo=UTC)
BODY_CUTOFF = datetime(2020, 6, 8, 12, 0, tzinfo=UTC)
DAY_1 = date(2019, 3, 1)
DAY_2 = date(2019, 3, 2)
USD = "USD"
NOTHING = Report(0, 0, 0, 0, 0)

Maker = async_sessionmaker[AsyncSession]
T = TypeVar("T")


def at(day: date, hour: int = 12, minute: int = 0, second: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=UTC)


async def final_message(
    sessionmaker: Maker,
    cipher: PhoneCipher,
    created_at: datetime,
    *,
    status: str = Status.DELIVERED,
    body: str | None = "Your table at Chez Léa is booked",
    **columns: Any,
) -> uuid.UUID:
    """A message as the worker leaves it once Twilio reported on it."""
    values: dict[str, Any] = {
        "twilio_sid": new_sid(),
        "final_at": created_at,
        "body": body,
        "created_at": created_at,
        **columns,
    }
    if status in {Status.CANCELLED, Status.SUPPRESSED}:
        values["twilio_sid"] = None  # never reached Twilio
    return await add_message(sessionmaker, cipher, status=status, **values)


async def row(sessionmaker: Maker, message_id: uuid.UUID) -> Message | None:
    async with sessionmaker() as session:
        return await session.get(Message, message_id, populate_existing=True)


async def body_of(sessionmaker: Maker, message_id: uuid.UUID) -> str | None:
    message = await row(sessionmaker, message_id)
    assert message is not None, "the message was deleted"
    return message.body


async def stats(
    sessionmaker: Maker, days: Sequence[date] = (DAY_1, DAY_2)
) -> dict[tuple[date, str, str, int, str], tuple[int, int, Decimal, int]]:
    async with sessionmaker() as session:
        rows = await session.execute(
            select(MessageDailyStats).where(MessageDailyStats.day.in_(list(days)))
        )
        return {
            (s.day, s.category, s.status, s.error_code, s.price_unit): (
                s.messages,
                s.segments,
                s.price,
                s.unpriced_segments,
            )
            for s in rows.scalars()
        }


async def add_notification(
    sessionmaker: Maker, created_at: datetime, data: dict[str, Any] | None = None
) -> uuid.UUID:
    async with transaction(sessionmaker) as session:
        notification = Notification(
            id=uuid.uuid4(),
            event="booking.confirmed",
            data=data if data is not None else {"customer_name": "Ana", "provider_name": "Léa"},
            reference="bk-1",
            requested_by="api_key:test",
            created_at=created_at,
        )
        session.add(notification)
        await session.flush()
        return notification.id


async def notification(sessionmaker: Maker, notification_id: uuid.UUID) -> Notification | None:
    async with sessionmaker() as session:
        return await session.get(Notification, notification_id, populate_existing=True)


async def retention(sessionmaker: Maker, settings: Settings, **options: Any) -> Report:
    return await apply_retention(sessionmaker, settings, now=NOW, **options)


# --- bodies -----------------------------------------------------------------------------


async def test_bodies_older_than_seven_days_are_erased_and_younger_ones_kept(
    sessionmaker: Maker, cipher: PhoneCipher, settings: Settings
) -> None:
    old = await final_message(sessionmaker, cipher, BODY_CUTOFF - timedelta(seconds=1))
    young = await final_message(sessionmaker, cipher, BODY_CUTOFF + timedelta(seconds=1))
    failed = await final_message(
        sessionmaker, cipher, NOW - timedelta(days=30), status=Status.FAILED, error_code=30007
    )
    sent = await final_message(sessionmaker, cipher, NOW - timedelta(days=30), status=Status.SENT)
    code = await final_message(sessionmaker, cipher, NOW - timedelta(days=30), body=None)

    report = await retention(sessionmaker, settings)

    assert report == Report(
        bodies_erased=3,
        notification_data_erased=0,
        messages_deleted=0,
        days_aggregated=0,
        notifications_deleted=0,
    )
    assert await body_of(sessionmaker, old) is None
    assert await body_of(sessionmaker, failed) is None
    # `sent` is as far as some carriers report: Twilio has the message, its body can go.
    assert await body_of(sessionmaker, sent) is None
    assert await body_of(sessionmaker, young) == "Your table at Chez Léa is booked"
    assert await body_of(sessionmaker, code) is None
    # Only the body: the row and its metadata stay for a year.
    kept = await row(sessionmaker, old)
    assert kept is not None
    assert (kept.status, kept.segments, kept.to_encrypted is not None) == ("delivered", 1, True)


async def test_messages_still_to_be_sent_keep_their_body_and_their_row(
    sessionmaker: Maker, cipher: PhoneCipher, settings: Settings
) -> None:
    ancient = NOW - timedelta(days=400)
    scheduled = await add_message(
        sessionmaker, cipher, status=Status.SCHEDULED, created_at=ancient, send_at=NOW
    )
    queued = await add_message(sessionmaker, cipher, status=Status.QUEUED, created_at=ancient)
    retrying = await add_message(
        sessionmaker, cipher, status=Status.SENDING, created_at=ancient, attempts=3
    )
    at_twilio = await add_message(
        sessionmaker, cipher, status=Status.SENDING, created_at=ancient, twilio_sid=new_sid()
    )

    report = await retention(sessionmaker, settings)

    for waiting in (scheduled, queued, retrying):
        assert await body_of(sessionmaker, waiting) == "hi"
    # Twilio took it (a status that never came): nothing left to send, so it goes.
    assert await row(sessionmaker, at_twilio) is None
    assert report == Report(
        bodies_erased=1,
        notification_data_erased=0,
        messages_deleted=1,
        days_aggregated=1,
        notifications_deleted=0,
    )


# --- metadata and the daily counts --------------------------------------------------------


async def make_old_year(sessionmaker: Maker, cipher: PhoneCipher) -> dict[str, uuid.UUID]:
    """Two old days of messages (deleted) and a few that stay, by name."""
    ids = {
        # DAY_1, transactional, delivered, USD: 3 messages, 4 segments, two priced.
        "priced_2_segments": await final_message(
            sessionmaker,
            cipher,
            at(DAY_1, 0, 0, 0),
            segments=2,
            price=Decimal("-0.01500"),
            price_unit=USD,
        ),
        "priced_last_second": await final_message(
            sessionmaker,
            cipher,
            at(DAY_1, 23, 59, 59),
            price=Decimal("-0.00750"),
            price_unit=USD,
        ),
        "unit_but_no_price": await final_message(
            sessionmaker, cipher, at(DAY_1, 9), price_unit=USD
        ),
        # DAY_1, transactional, delivered, no price at all.
        "never_priced": await final_message(sessionmaker, cipher, at(DAY_1, 10), segments=3),
        # DAY_1, transactional, failed with its error.
        "failed": await final_message(
            sessionmaker, cipher, at(DAY_1, 11), status=Status.FAILED, error_code=30007
        ),
        # DAY_1, marketing.
        "marketing": await final_message(
            sessionmaker,
            cipher,
            at(DAY_1, 12),
            category="marketing",
            price=Decimal("-0.00750"),
            price_unit=USD,
        ),
        # DAY_2: just after midnight UTC (still March 1st in New York).
        "sent_after_midnight": await final_message(
            sessionmaker, cipher, at(DAY_2, 0, 0, 1), status=Status.SENT
        ),
        "suppressed": await final_message(
            sessionmaker,
            cipher,
            at(DAY_2, 8),
            status=Status.SUPPRESSED,
            suppression_reason="opted_out",
        ),
        # Kept: younger than a year, or still to be sent.
        "within_a_year": await final_message(
            sessionmaker, cipher, METADATA_CUTOFF + timedelta(seconds=1)
        ),
        "still_queued": await add_message(
            sessionmaker, cipher, status=Status.QUEUED, created_at=at(DAY_1, 13)
        ),
    }
    async with transaction(sessionmaker) as session:
        await add_events(
            session, [ids["priced_2_segments"], ids["within_a_year"]], Status.SENT, source="worker"
        )
    return ids


EXPECTED_STATS = {
    (DAY_1, "transactional", "delivered", 0, USD): (3, 4, Decimal("-0.02250"), 1),
    (DAY_1, "transactional", "delivered", 0, ""): (1, 3, Decimal("0"), 3),
    (DAY_1, "transactional", "failed", 30007, ""): (1, 1, Decimal("0"), 1),
    (DAY_1, "marketing", "delivered", 0, USD): (1, 1, Decimal("-0.00750"), 0),
    (DAY_2, "transactional", "sent", 0, ""): (1, 1, Decimal("0"), 1),
    (DAY_2, "transactional", "suppressed", 0, ""): (1, 1, Decimal("0"), 1),
}


async def events_of(sessionmaker: Maker, message_id: uuid.UUID) -> int:
    async with sessionmaker() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(MessageEvent)
            .where(MessageEvent.message_id == message_id)
        )
        return int(count or 0)


async def test_messages_older_than_a_year_are_deleted_and_counted_per_day(
    sessionmaker: Maker, cipher: PhoneCipher, settings: Settings
) -> None:
    ids = await make_old_year(sessionmaker, cipher)

    report = await retention(sessionmaker, settings)

    assert report.messages_deleted == 8
    assert report.days_aggregated == 2
    gone = [name for name, id_ in ids.items() if await row(sessionmaker, id_) is None]
    assert sorted(gone) == sorted(
        [
            "priced_2_segments",
            "priced_last_second",
            "unit_but_no_price",
            "never_priced",
            "failed",
            "marketing",
            "sent_after_midnight",
            "suppressed",
        ]
    )
    assert await events_of(sessionmaker, ids["priced_2_segments"]) == 0
    assert await events_of(sessionmaker, ids["within_a_year"]) == 1
    assert await body_of(sessionmaker, ids["still_queued"]) == "hi"
    assert await stats(sessionmaker) == EXPECTED_STATS


async def test_a_second_run_changes_nothing(
    sessionmaker: Maker, cipher: PhoneCipher, settings: Settings
) -> None:
    ids = await make_old_year(sessionmaker, cipher)
    young = await final_message(sessionmaker, cipher, NOW - timedelta(days=1))
    first = await retention(sessionmaker, settings)

    second = await retention(sessionmaker, settings)

    assert first.messages_deleted == 8
    assert second == NOTHING
    assert await stats(sessionmaker) == EXPECTED_STATS
    assert await body_of(sessionmaker, young) == "Your table at Chez Léa is booked"
    assert await row(sessionmaker, ids["within_a_year"]) is not None


async def test_a_day_deleted_over_several_batches_adds_up(
    sessionmaker: Maker, cipher: PhoneCipher, settings: Settings
) -> None:
    ids = await make_old_year(sessionmaker, cipher)
    # Counts an earlier run already kept for DAY_1 are added to, not replaced.
    async with transaction(sessionmaker) as session:
        session.add(
            MessageDailyStats(
                day=DAY_1,
                category="transactional",
                status="delivered",
                error_code=0,
                price_unit=USD,
                messages=10,
                segments=12,
                price=Decimal("-0.09000"),
                unpriced_segments=2,
            )
        )

    report = await retention(sessionmaker, settings, batch_size=2)

    assert report.messages_deleted == 8
    assert report.days_aggregated == 2
    assert await stats(sessionmaker) == {
        **EXPECTED_STATS,
        (DAY_1, "transactional", "delivered", 0, USD): (13, 16, Decimal("-0.11250"), 3),
    }
    assert await row(sessionmaker, ids["within_a_year"]) is not None


async def test_bodies_are_erased_in_batches_until_none_is_left(
    sessionmaker: Maker, cipher: PhoneCipher, settings: Settings
) -> None:
    old = [await final_message(sessionmaker, cipher, NOW - timedelta(days=8)) for _ in range(5)]

    report = await retention(sessionmaker, settings, batch_size=2)

    assert report.bodies_erased == 5
    assert [await body_of(sessionmaker, id_) for id_ in old] == [None] * 5


async def test_a_verification_keeps_its_row_when_its_message_goes(
    sessionmaker: Maker, cipher: PhoneCipher, settings: Settings
) -> None:
    message_id = await final_message(sessionmaker, cipher, at(DAY_1), body=None)
    async with transaction(sessionmaker) as session:
        user = User(external_id=f"ret-{uuid.uuid4().hex[:8]}")
        session.add(user)
        await session.flush()
        verification = Verification(
            user_id=user.id,
            purpose="login",
            phone_index=cipher.blind_index("+14155552671"),
            message_id=message_id,
            expires_at=at(DAY_1, 13),
        )
        session.add(verification)
        await session.flush()

    report = await retention(sessionmaker, settings)

    assert report.messages_deleted == 1
    async with sessionmaker() as session:
        kept = await session.get(Verification, verification.id, populate_existing=True)
    assert kept is not None
    assert kept.message_id is None  # ON DELETE SET NULL


# --- notifications --------------------------------------------------------------------------


async def test_notification_data_goes_with_the_bodies_it_renders(
    sessionmaker: Maker, cipher: PhoneCipher, settings: Settings
) -> None:
    sent = await add_notification(sessionmaker, NOW - timedelta(days=8))
    await final_message(sessionmaker, cipher, NOW - timedelta(days=8), notification_id=sent)
    waiting = await add_notification(sessionmaker, NOW - timedelta(days=8))
    await add_message(
        sessionmaker,
        cipher,
        status=Status.SCHEDULED,
        created_at=NOW - timedelta(days=8),
        send_at=NOW + timedelta(days=1),
        notification_id=waiting,
    )
    recent = await add_notification(sessionmaker, NOW - timedelta(days=6))
    await final_message(sessionmaker, cipher, NOW - timedelta(days=6), notification_id=recent)
    to_nobody = await add_notification(sessionmaker, NOW - timedelta(days=8))

    report = await retention(sessionmaker, settings)

    assert report.notification_data_erased == 2
    erased = await notification(sessionmaker, sent)
    assert erased is not None
    assert (erased.data, erased.event, erased.reference) == ({}, "booking.confirmed", "bk-1")
    nobody = await notification(sessionmaker, to_nobody)
    assert nobody is not None
    assert nobody.data == {}
    for kept in (waiting, recent):
        found = await notification(sessionmaker, kept)
        assert found is not None
        assert found.data == {"customer_name": "Ana", "provider_name": "Léa"}


async def test_old_notifications_go_once_their_messages_are_gone(
    sessionmaker: Maker, cipher: PhoneCipher, settings: Settings
) -> None:
    with_old_messages = await add_notification(sessionmaker, at(DAY_1))
    for _ in range(2):
        await final_message(sessionmaker, cipher, at(DAY_1), notification_id=with_old_messages)
    to_nobody = await add_notification(sessionmaker, at(DAY_1))
    still_sending = await add_notification(sessionmaker, at(DAY_1))
    await add_message(
        sessionmaker,
        cipher,
        status=Status.QUEUED,
        created_at=at(DAY_1),
        notification_id=still_sending,
    )
    within_a_year = await add_notification(sessionmaker, METADATA_CUTOFF + timedelta(hours=1))

    report = await retention(sessionmaker, settings)

    assert report.notifications_deleted == 2
    assert await notification(sessionmaker, with_old_messages) is None
    assert await notification(sessionmaker, to_nobody) is None
    kept = await notification(sessionmaker, still_sending)
    assert kept is not None
    assert kept.data != {}
    within = await notification(sessionmaker, within_a_year)
    assert within is not None
    assert within.data == {}


@pytest.fixture
async def service(make_api_key: Any) -> dict[str, str]:
    headers: dict[str, str] = await make_api_key(
        Scope.SMS_SEND, Scope.USERS_WRITE, name="booking-platform"
    )
    return headers


async def confirm(client: httpx.AsyncClient, service: dict[str, str], booking_id: str) -> uuid.UUID:
    customer = f"cust-{booking_id}"
    created = await client.put(
        f"/api/users/{customer}",
        json={"phone_number": "+14155552671", "phone_verified": True, "locale": "en"},
        headers=service,
    )
    assert created.status_code == 201, created.text
    confirmed = await client.post(
        "/api/sms/notify",
        json={
            "event": "booking.confirmed",
            "data": {
                "service_name": "Haircut",
                "provider_name": "Studio Léa",
                "starts_at": "2026-12-15T13:30:00+00:00",
                "customer_name": "Ana",
                "seats": 2,
                "booking_reference": "BK-1",
            },
            "recipients": {"user_ids": [customer]},
            "reference": booking_id,
        },
        headers=service,
    )
    assert confirmed.status_code == 202, confirmed.text
    return uuid.UUID(confirmed.json()["notification_id"])


async def test_resending_a_confirmation_whose_data_was_erased_is_a_clear_conflict(
    client: httpx.AsyncClient,
    service: dict[str, str],
    sessionmaker: Maker,
    settings: Settings,
) -> None:
    notification_id = await confirm(client, service, "bk-old")
    # Sent and delivered on June 1st, 2020: two weeks before NOW.
    async with transaction(sessionmaker) as session:
        await session.execute(
            update(Notification)
            .where(Notification.id == notification_id)
            .values(created_at=NOW - timedelta(days=14))
        )
        await session.execute(
            update(Message)
            .where(Message.notification_id == notification_id)
            .values(
                created_at=NOW - timedelta(days=14), status=Status.DELIVERED, twilio_sid=new_sid()
            )
        )
    report = await retention(sessionmaker, settings)
    assert (report.bodies_erased, report.notification_data_erased) == (1, 1)

    response = await client.post(
        "/api/sms/resend-booking-confirmation", json={"booking_id": "bk-old"}, headers=service
    )

    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "booking_confirmation_expired"
    assert "kept 7 days" in response.json()["detail"]


async def test_a_confirmation_past_body_retention_is_not_resent_before_the_job_runs(
    client: httpx.AsyncClient, service: dict[str, str]
) -> None:
    await confirm(client, service, "bk-week")

    with time_machine.travel(datetime.now(UTC) + timedelta(days=7, minutes=1), tick=False):
        late = await client.post(
            "/api/sms/resend-booking-confirmation", json={"booking_id": "bk-week"}, headers=service
        )
    with time_machine.travel(datetime.now(UTC) + timedelta(days=6, hours=23), tick=False):
        in_time = await client.post(
            "/api/sms/resend-booking-confirmation", json={"booking_id": "bk-week"}, headers=service
        )

    assert late.status_code == 409, late.text
    assert late.json()["code"] == "booking_confirmation_expired"
    assert in_time.status_code == 202, in_time.text


# --- dry run, logs, indexes -----------------------------------------------------------------


async def test_a_dry_run_counts_what_a_run_does_and_changes_nothing(
    sessionmaker: Maker, cipher: PhoneCipher, settings: Settings
) -> None:
    ids = await make_old_year(sessionmaker, cipher)
    body = await final_message(sessionmaker, cipher, NOW - timedelta(days=8))
    old_notification = await add_notification(sessionmaker, at(DAY_1))
    await final_message(sessionmaker, cipher, at(DAY_1), notification_id=old_notification)
    stale_data = await add_notification(sessionmaker, NOW - timedelta(days=8))

    counted = await retention(sessionmaker, settings, dry_run=True)

    assert await body_of(sessionmaker, body) == "Your table at Chez Léa is booked"
    assert await row(sessionmaker, ids["failed"]) is not None
    assert await stats(sessionmaker) == {}
    assert (await notification(sessionmaker, stale_data)) is not None

    done = await retention(sessionmaker, settings)

    assert counted == Report(
        # The 8-day-old one, the one within a year, and the 9 old ones (erased, then deleted).
        bodies_erased=11,
        notification_data_erased=2,  # the old one's too: its message is final
        messages_deleted=9,
        days_aggregated=2,
        notifications_deleted=1,
        dry_run=True,
    )
    assert done == dataclasses.replace(counted, dry_run=False)


async def test_one_log_line_per_run_with_the_counts_and_no_body_or_number(
    sessionmaker: Maker,
    cipher: PhoneCipher,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await final_message(sessionmaker, cipher, NOW - timedelta(days=8), body="Secret body 1234")
    await final_message(sessionmaker, cipher, at(DAY_1))

    await retention(sessionmaker, settings)

    lines = [r.getMessage() for r in caplog.records if r.name == "app.retention.service"]
    assert len(lines) == 1
    assert [r.levelno for r in caplog.records if r.name == "app.retention.service"] == [
        logging.INFO
    ]
    assert "2 bodies erased" in lines[0]
    assert "1 messages deleted (counts kept for 1 days)" in lines[0]
    assert "Secret body" not in caplog.text
    assert "Chez Léa" not in caplog.text
    assert "4155552671" not in caplog.text


async def test_every_batch_is_picked_through_an_index(
    sessionmaker: Maker, settings: Settings
) -> None:
    batches = {
        "bodies": repository.bodies_batch(BODY_CUTOFF, 5000),
        "messages": repository.messages_batch(METADATA_CUTOFF, 5000),
        "notification data": repository.notification_data_batch(BODY_CUTOFF, 5000),
        "notifications": repository.notifications_batch(METADATA_CUTOFF, 5000),
    }
    async with sessionmaker() as session:
        dialect = (await session.connection()).dialect
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        for name, statement in batches.items():
            sql = statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
            plan = "\n".join((await session.execute(text(f"EXPLAIN {sql}"))).scalars().all())
            assert "Seq Scan" not in plan, f"{name}:\n{plan}"
            assert "Index" in plan, f"{name}:\n{plan}"
        await session.rollback()


# --- the cron job ---------------------------------------------------------------------------


def test_retention_runs_daily_at_0317_utc_in_the_worker(settings: Settings) -> None:
    configured = worker_settings(settings)
    [job] = [job for job in configured["cron_jobs"] if job.coroutine is run_retention]

    assert job.name == "cron:run_retention"
    assert (job.hour, job.minute, job.second) == ({3}, {17}, 0)
    assert (job.day, job.weekday, job.month) == (None, None, None)
    assert job.unique  # one job per slot however many workers run
    assert job.keep_result_s == 0
    assert job.timeout_s == RETENTION_TIMEOUT_SECONDS
    assert configured["timezone"] == UTC


async def test_the_cron_job_applies_retention_with_the_current_time(
    sessionmaker: Maker, cipher: PhoneCipher, settings: Settings
) -> None:
    real_now = datetime.now(UTC)
    old = await final_message(sessionmaker, cipher, real_now - timedelta(days=400))
    week_old = await final_message(sessionmaker, cipher, real_now - timedelta(days=8))
    async with transaction(sessionmaker) as session:
        for key, expires_at in (("stale", real_now - timedelta(hours=1)), ("live", real_now)):
            session.add(
                IdempotencyKey(
                    principal="api_key:retention-test",
                    key=key,
                    request_hash=b"x" * 32,
                    expires_at=expires_at + timedelta(hours=1 if key == "live" else 0),
                )
            )

    result = await run_retention({"state": {"sessionmaker": sessionmaker}, "settings": settings})

    assert result == {
        "bodies_erased": 2,
        "notification_data_erased": 0,
        "messages_deleted": 1,
        "days_aggregated": 1,
        "notifications_deleted": 0,
        "dry_run": False,
        # Stored idempotent answers past their 24 h go in the same daily job.
        "idempotency_keys_purged": 1,
    }
    assert await row(sessionmaker, old) is None
    assert await body_of(sessionmaker, week_old) is None
    async with sessionmaker() as session:
        kept = await session.scalars(
            select(IdempotencyKey.key).where(IdempotencyKey.principal == "api_key:retention-test")
        )
        assert list(kept) == ["live"]


async def test_a_run_out_of_its_budget_queues_its_continuation(
    sessionmaker: Maker, settings: Settings, redis_client: Any
) -> None:
    """The run stops (its batches kept) and a job goes on: no job may hold a worker's jobs
    hostage for long if that worker dies (arq's one in-progress length is the longest)."""
    pool = ArqRedis(connection_pool=redis_client.connection_pool)
    ctx = {"state": {"sessionmaker": sessionmaker}, "settings": settings, "redis": pool}

    result = await run_retention(ctx, budget=0.0)

    assert result == {"continued": True}
    queued = await pool.queued_jobs()
    assert [(job.function, job.job_id) for job in queued] == [(CONTINUE_JOB, CONTINUE_JOB)]


def test_a_dead_workers_jobs_are_held_no_longer_than_a_campaign_chunk(
    settings: Settings,
) -> None:
    """A worker killed mid-job: arq lets another take its jobs once its in-progress marker,
    as long as the longest job timeout of all plus 10 s, has run out. Retention (or a job
    left at arq's default) must not stretch that to an hour."""
    worker = Worker(**worker_settings(settings))

    assert worker.in_progress_timeout_s == chunk_timeout_seconds(settings) + 10
    assert chunk_timeout_seconds(settings) > RETENTION_TIMEOUT_SECONDS


# --- two runs at once, and the CLI (both commit for real) ------------------------------------


async def _delete_test_rows(maker: Maker) -> None:
    async with transaction(maker) as session:
        await session.execute(text("DELETE FROM messages WHERE category = 'test'"))
        await session.execute(text("DELETE FROM message_daily_stats WHERE category = 'test'"))


def committing(settings: Settings) -> tuple[AsyncEngine, Maker]:
    """Sessions that commit for real, on connections of their own (no pool: usable from
    any event loop)."""
    assert settings.database_url is not None
    engine = create_async_engine(settings.database_url, poolclass=NullPool)
    return engine, create_sessionmaker(engine)


@pytest.fixture
async def committed(settings: Settings) -> AsyncIterator[Maker]:
    """What the test made (messages of category `test`, their day counts) is deleted
    afterwards."""
    engine, maker = committing(settings)
    try:
        yield maker
    finally:
        await _delete_test_rows(maker)
        await engine.dispose()


async def test_two_runs_at_once_split_the_work_and_count_each_message_once(
    committed: Maker, cipher: PhoneCipher, settings: Settings
) -> None:
    days = [date(2019, 1, day) for day in (10, 11, 12)]
    for index in range(60):
        await final_message(
            committed,
            cipher,
            at(days[index % 3], index % 24),
            category="test",
            segments=1 + index % 2,
        )

    one, two = await asyncio.gather(
        retention(committed, settings, batch_size=7),
        retention(committed, settings, batch_size=7),
    )

    assert one.messages_deleted + two.messages_deleted == 60
    assert await stats(committed, days) == {
        (day, "test", "delivered", 0, ""): (20, 30, Decimal("0"), 30) for day in days
    }


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings: Settings) -> None:
    """The CLI's environment: the test servers, no `.env` or `.data/local.env` from the repo."""
    monkeypatch.chdir(tmp_path)
    for name in ("APP_ENV", "MESSAGE_BODY_RETENTION_DAYS", "MESSAGE_RETENTION_DAYS"):
        monkeypatch.delenv(name, raising=False)
    assert settings.database_url is not None
    assert settings.redis_url is not None
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("REDIS_URL", settings.redis_url)


def in_committed(settings: Settings, work: Callable[[Maker], Awaitable[T]]) -> T:
    async def run() -> T:
        engine, maker = committing(settings)
        try:
            return await work(maker)
        finally:
            await engine.dispose()

    return asyncio.run(run())


@pytest.fixture
def committed_sync(settings: Settings) -> Iterator[None]:
    yield
    in_committed(settings, _delete_test_rows)


def test_the_cli_dry_run_changes_nothing_and_a_run_then_does_it(
    cli_env: None, committed_sync: None, settings: Settings, cipher: PhoneCipher
) -> None:
    real_now = datetime.now(UTC)

    async def make(maker: Maker) -> tuple[uuid.UUID, uuid.UUID]:
        old = await final_message(maker, cipher, real_now - timedelta(days=500), category="test")
        week = await final_message(maker, cipher, real_now - timedelta(days=8), category="test")
        return old, week

    old, week = in_committed(settings, make)

    async def look(maker: Maker) -> tuple[bool, str | None]:
        return await row(maker, old) is not None, await body_of(maker, week)

    runner = CliRunner()

    dry = runner.invoke(cli, ["retention", "run", "--dry-run"], catch_exceptions=False)

    assert dry.exit_code == 0, dry.output
    assert dry.output.splitlines() == [
        "dry run: nothing was changed; a run now would do this",
        "bodies erased:             2",
        "notification data erased:  0",
        "messages deleted:          1",
        "days aggregated:           1",
        "notifications deleted:     0",
    ]
    assert in_committed(settings, look) == (True, "Your table at Chez Léa is booked")

    done = runner.invoke(cli, ["retention", "run"], catch_exceptions=False)

    assert done.exit_code == 0, done.output
    assert done.output.splitlines() == [
        "bodies erased:             2",
        "notification data erased:  0",
        "messages deleted:          1",
        "days aggregated:           1",
        "notifications deleted:     0",
    ]
    assert in_committed(settings, look) == (False, None)
