"""Booking reminders: scheduled one per offset in the customer's language, moved with the
booking, cancelled with it, released by the sweeper when their time comes (the clock is
shifted, never slept on) and checked again when they are sent."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import respx
import time_machine
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.principal import Scope
from app.core.database import transaction
from app.core.settings import Settings
from app.messages.models import Message
from app.outbox import repository as outbox_repository
from app.outbox.service import Outbox, Outcome
from tests.sending_support import created, event_rows, load, new_sid, twilio_base

MakeKey = Callable[..., Awaitable[dict[str, str]]]

# The booking is made on Monday morning for Thursday 09:30 in New York (15:30 in Paris).
NOW = datetime(2025, 5, 12, 9, 0, tzinfo=UTC)
START = datetime(2025, 5, 15, 13, 30, tzinfo=UTC)
DAY_BEFORE = START - timedelta(hours=24)
HOUR_BEFORE = START - timedelta(hours=1)
TICK = timedelta(seconds=1)


EN_PHONE = "+14155552671"
FR_PHONE = "+33612345678"
EN_24H = "Reminder: Haircut with Studio Léa tomorrow, May 15, 2025, 9:30 AM."
EN_1H = "Reminder: Haircut with Studio Léa starts in 1 hour (May 15, 2025, 9:30 AM)."
FR_24H = "Rappel : Haircut avec Studio Léa demain, le 15 mai 2025, 15:30."
FR_1H = "Rappel : Haircut avec Studio Léa commence dans 1 heure (15 mai 2025, 15:30)."
BOOKING_DATA = {
    "service_name": "Haircut",
    "provider_name": "Studio Léa",
    "starts_at": START.isoformat(),
}


@pytest.fixture
def api(settings: Settings) -> Iterator[respx.MockRouter]:
    """Twilio, as respx: any request without a route fails the test."""
    with respx.mock(base_url=twilio_base(settings), assert_all_called=False) as router:
        yield router


@pytest.fixture
async def service(make_api_key: MakeKey) -> dict[str, str]:
    return await make_api_key(Scope.SMS_SEND, Scope.USERS_WRITE, name="booking-platform")


@pytest.fixture
async def customer(client: httpx.AsyncClient, service: dict[str, str]) -> str:
    return await add_customer(client, service, "cust-en", EN_PHONE, "en", "America/New_York")


async def add_customer(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    user_id: str,
    phone: str,
    locale: str,
    zone: str,
) -> str:
    response = await client.put(
        f"/api/users/{user_id}",
        json={
            "phone_number": phone,
            "phone_verified": True,
            "locale": locale,
            "time_zone": zone,
        },
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return user_id


async def schedule(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    booking_id: str,
    user_id: str,
    starts_at: datetime = START,
    *,
    at: datetime = NOW,
    **extra: Any,
) -> httpx.Response:
    """PUT the booking's reminders with Python's clock at `at`."""
    body = {
        "user_id": user_id,
        "starts_at": starts_at.isoformat(),
        "service_name": "Haircut",
        "provider_name": "Studio Léa",
        **extra,
    }
    with time_machine.travel(at, tick=False):
        return await client.put(
            f"/api/sms/bookings/{booking_id}/reminders", json=body, headers=headers
        )


async def release_at(
    sessionmaker: async_sessionmaker[AsyncSession], moment: datetime
) -> list[uuid.UUID]:
    """What the sweeper releases when its clock reads `moment`."""
    with time_machine.travel(moment, tick=False):
        async with transaction(sessionmaker) as session:
            return await outbox_repository.release_scheduled(
                session, now=datetime.now(UTC), limit=100
            )


async def send_at(outbox: Outbox, message_id: uuid.UUID, moment: datetime) -> Outcome:
    with time_machine.travel(moment, tick=False):
        return (await outbox.send(message_id)).outcome


async def booking_messages(
    sessionmaker: async_sessionmaker[AsyncSession], booking_id: str
) -> list[Message]:
    """Every message about the booking, the earliest send time first."""
    async with sessionmaker() as session:
        rows = await session.execute(
            select(Message)
            .where(Message.reference == booking_id)
            .order_by(Message.send_at, Message.created_at)
        )
        return list(rows.scalars())


def reminder_ids(response: httpx.Response) -> list[uuid.UUID]:
    """The scheduled reminders' message ids, in offset order (24 h, then 1 h)."""
    return [
        uuid.UUID(reminder["message_id"])
        for reminder in response.json()["reminders"]
        if reminder["message_id"] is not None
    ]


def sent_form(route: respx.Route) -> dict[str, str]:
    return dict(parse_qsl(route.calls.last.request.content.decode()))


# --- scheduling ----------------------------------------------------------------------------


async def test_reminders_are_scheduled_at_each_offset_in_the_customers_language(
    client: httpx.AsyncClient,
    service: dict[str, str],
    customer: str,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    french = await add_customer(client, service, "cust-fr", FR_PHONE, "fr", "Europe/Paris")

    english = await schedule(client, service, "bk-en-1", customer)
    in_french = await schedule(client, service, "bk-fr-1", french)

    assert english.status_code == 200, english.text
    answer = english.json()
    assert (answer["booking_id"], answer["user_id"], answer["cancelled"]) == (
        "bk-en-1",
        "cust-en",
        False,
    )
    assert datetime.fromisoformat(answer["starts_at"]) == START
    assert [
        (r["offset_minutes"], r["event"], datetime.fromisoformat(r["send_at"]), r["status"])
        for r in answer["reminders"]
    ] == [
        (1440, "booking.reminder_24h", DAY_BEFORE, "scheduled"),
        (60, "booking.reminder_1h", HOUR_BEFORE, "scheduled"),
    ]
    assert all(r["skipped"] is None for r in answer["reminders"])
    for booking_id, response, bodies in (
        ("bk-en-1", english, [EN_24H, EN_1H]),
        ("bk-fr-1", in_french, [FR_24H, FR_1H]),
    ):
        stored = await booking_messages(sessionmaker, booking_id)
        assert [message.id for message in stored] == reminder_ids(response)
        assert [message.body for message in stored] == bodies
        assert [message.status for message in stored] == ["scheduled", "scheduled"]
        assert [message.send_at for message in stored] == [DAY_BEFORE, HOUR_BEFORE]
        assert [message.category for message in stored] == ["booking_reminder"] * 2
        # Not worth sending once the booking has begun.
        # A reminder a quarter of its lead time late is not sent: "tomorrow" would be wrong.
        assert [message.expires_at for message in stored] == [
            DAY_BEFORE + timedelta(hours=6),
            HOUR_BEFORE + timedelta(minutes=15),
        ]

    shown = await client.get("/api/sms/bookings/bk-en-1/reminders", headers=service)
    assert shown.status_code == 200
    assert shown.json() == answer


async def test_reminders_fire_at_their_time_and_twilio_gets_the_text(
    client: httpx.AsyncClient,
    service: dict[str, str],
    customer: str,
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    day_id, hour_id = reminder_ids(await schedule(client, service, "bk-fire", customer))
    create = api.post("/Messages.json").mock(side_effect=lambda _: created(new_sid()))

    assert await release_at(sessionmaker, DAY_BEFORE - TICK) == []
    assert await release_at(sessionmaker, DAY_BEFORE + TICK) == [day_id]
    assert await send_at(outbox, day_id, DAY_BEFORE + TICK) is Outcome.ACCEPTED

    assert create.call_count == 1
    sent = sent_form(create)
    assert (sent["To"], sent["Body"]) == (EN_PHONE, EN_24H)
    day = await load(sessionmaker, day_id)
    assert day.twilio_sid is not None
    assert (await load(sessionmaker, hour_id)).status == "scheduled"

    assert await release_at(sessionmaker, HOUR_BEFORE - TICK) == []
    assert await release_at(sessionmaker, HOUR_BEFORE + TICK) == [hour_id]
    assert await send_at(outbox, hour_id, HOUR_BEFORE + TICK) is Outcome.ACCEPTED

    assert create.call_count == 2
    sent = sent_form(create)
    assert (sent["To"], sent["Body"]) == (EN_PHONE, EN_1H)
    assert await release_at(sessionmaker, START + timedelta(days=1)) == []


async def test_a_moved_booking_gets_reminders_only_at_its_new_times(
    client: httpx.AsyncClient,
    service: dict[str, str],
    customer: str,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    new_start = START + timedelta(days=2, hours=3)  # Saturday 12:30 in New York
    old_ids = reminder_ids(await schedule(client, service, "bk-move", customer))

    a_day_later = NOW + timedelta(days=1)
    moved = await schedule(client, service, "bk-move", customer, new_start, at=a_day_later)

    assert moved.status_code == 200, moved.text
    new_ids = reminder_ids(moved)
    assert len(new_ids) == 2
    assert not set(new_ids) & set(old_ids)
    assert [datetime.fromisoformat(r["send_at"]) for r in moved.json()["reminders"]] == [
        new_start - timedelta(hours=24),
        new_start - timedelta(hours=1),
    ]
    for old_id in old_ids:
        old = await load(sessionmaker, old_id)
        assert old.status == "cancelled"
        last = (await event_rows(sessionmaker, old_id))[-1]
        assert (last.status, last.source, last.detail) == (
            "cancelled",
            "api",
            "booking rescheduled",
        )
    new = [await load(sessionmaker, new_id) for new_id in new_ids]
    assert [message.status for message in new] == ["scheduled", "scheduled"]
    assert new[0].body == ("Reminder: Haircut with Studio Léa tomorrow, May 17, 2025, 12:30 PM.")
    assert [message.expires_at for message in new] == [
        new_start - timedelta(hours=18),
        new_start - timedelta(minutes=45),
    ]
    shown = await client.get("/api/sms/bookings/bk-move/reminders", headers=service)
    assert reminder_ids(shown) == new_ids

    # Through the old times: nothing; through the new ones: the new reminders, each in turn.
    assert await release_at(sessionmaker, DAY_BEFORE + TICK) == []
    assert await release_at(sessionmaker, HOUR_BEFORE + TICK) == []
    assert await release_at(sessionmaker, START + TICK) == []
    assert await release_at(sessionmaker, new_start - timedelta(hours=24) + TICK) == new_ids[:1]
    assert await release_at(sessionmaker, new_start - timedelta(hours=1) + TICK) == new_ids[1:]


async def test_a_booking_moved_away_and_back_has_live_reminders_again(
    client: httpx.AsyncClient,
    service: dict[str, str],
    customer: str,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    first = reminder_ids(await schedule(client, service, "bk-back", customer))
    await schedule(client, service, "bk-back", customer, START + timedelta(days=1))

    back = await schedule(client, service, "bk-back", customer)

    live = reminder_ids(back)
    assert len(live) == 2
    assert not set(live) & set(first)
    assert [r["status"] for r in back.json()["reminders"]] == ["scheduled", "scheduled"]
    shown = await client.get("/api/sms/bookings/bk-back/reminders", headers=service)
    assert reminder_ids(shown) == live
    assert await release_at(sessionmaker, DAY_BEFORE + TICK) == live[:1]
    assert await release_at(sessionmaker, START + timedelta(days=1)) == live[1:]


async def test_a_reminder_whose_time_has_passed_is_skipped(
    client: httpx.AsyncClient,
    service: dict[str, str],
    customer: str,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    soon = NOW + timedelta(hours=2)

    response = await schedule(client, service, "bk-soon", customer, soon)

    assert response.status_code == 200, response.text
    day, hour = response.json()["reminders"]
    assert (day["offset_minutes"], day["skipped"], day["message_id"], day["status"]) == (
        1440,
        "in_the_past",
        None,
        None,
    )
    assert (hour["offset_minutes"], hour["skipped"], hour["status"]) == (60, None, "scheduled")
    stored = await booking_messages(sessionmaker, "bk-soon")
    assert [(message.id, message.send_at) for message in stored] == [
        (uuid.UUID(hour["message_id"]), soon - timedelta(hours=1))
    ]
    assert await release_at(sessionmaker, NOW + TICK) == []


async def test_delete_cancels_the_reminders_not_yet_sent(
    client: httpx.AsyncClient,
    service: dict[str, str],
    customer: str,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    ids = reminder_ids(await schedule(client, service, "bk-delete", customer))

    with time_machine.travel(NOW + timedelta(hours=1), tick=False):
        deleted = await client.delete("/api/sms/bookings/bk-delete/reminders", headers=service)

    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["cancelled"] is True
    assert [r["status"] for r in deleted.json()["reminders"]] == ["cancelled", "cancelled"]
    assert [(await load(sessionmaker, i)).status for i in ids] == ["cancelled", "cancelled"]
    shown = await client.get("/api/sms/bookings/bk-delete/reminders", headers=service)
    assert shown.json()["cancelled"] is True
    assert reminder_ids(shown) == ids
    assert [r["status"] for r in shown.json()["reminders"]] == ["cancelled", "cancelled"]
    assert await release_at(sessionmaker, START + TICK) == []

    unknown = await client.delete("/api/sms/bookings/bk-never/reminders", headers=service)
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "booking_not_found"


async def test_a_booking_cancelled_event_cancels_the_reminders(
    client: httpx.AsyncClient,
    service: dict[str, str],
    customer: str,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    ids = reminder_ids(await schedule(client, service, "bk-event", customer))

    with time_machine.travel(NOW + timedelta(hours=1), tick=False):
        response = await client.post(
            "/api/sms/notify",
            json={
                "event": "booking.cancelled",
                "data": BOOKING_DATA,
                "recipients": {"user_ids": [customer]},
                "reference": "bk-event",
            },
            headers=service,
        )

    assert response.status_code == 202, response.text
    assert sorted(response.json()["cancelled_reminders"]) == sorted(str(i) for i in ids)
    [told] = response.json()["queued"]
    assert told["user_id"] == customer
    assert [(await load(sessionmaker, i)).status for i in ids] == ["cancelled", "cancelled"]
    last = (await event_rows(sessionmaker, ids[0]))[-1]
    assert (last.status, last.detail) == ("cancelled", "booking cancelled")
    shown = await client.get("/api/sms/bookings/bk-event/reminders", headers=service)
    assert shown.json()["cancelled"] is True
    assert await release_at(sessionmaker, START + TICK) == []


# --- checked again when sent ---------------------------------------------------------------


async def test_the_reminder_preference_is_checked_when_the_reminder_is_sent(
    client: httpx.AsyncClient,
    service: dict[str, str],
    customer: str,
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    day_id, _ = reminder_ids(await schedule(client, service, "bk-pref", customer))
    assert (await load(sessionmaker, day_id)).status == "scheduled"  # on when scheduled
    create = api.post("/Messages.json").mock(side_effect=lambda _: created(new_sid()))
    turned_off = await client.put(
        f"/api/users/{customer}/preferences", json={"booking_reminders": False}, headers=service
    )
    assert turned_off.status_code == 200, turned_off.text

    assert await release_at(sessionmaker, DAY_BEFORE + TICK) == [day_id]
    assert await send_at(outbox, day_id, DAY_BEFORE + TICK) is Outcome.SUPPRESSED

    assert not create.called
    message = await load(sessionmaker, day_id)
    assert (message.status, message.suppression_reason) == ("suppressed", "preference_off")
    assert message.twilio_sid is None


async def test_a_reminder_turned_on_after_scheduling_is_sent(
    client: httpx.AsyncClient,
    service: dict[str, str],
    customer: str,
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    turned_off = await client.put(
        f"/api/users/{customer}/preferences", json={"booking_reminders": False}, headers=service
    )
    assert turned_off.status_code == 200, turned_off.text
    day_id, _ = reminder_ids(await schedule(client, service, "bk-on", customer))
    assert (await load(sessionmaker, day_id)).status == "scheduled"  # not suppressed yet
    create = api.post("/Messages.json").mock(side_effect=lambda _: created(new_sid()))
    turned_on = await client.put(
        f"/api/users/{customer}/preferences", json={"booking_reminders": True}, headers=service
    )
    assert turned_on.status_code == 200, turned_on.text

    assert await release_at(sessionmaker, DAY_BEFORE + TICK) == [day_id]
    assert await send_at(outbox, day_id, DAY_BEFORE + TICK) is Outcome.ACCEPTED
    assert create.call_count == 1


async def test_a_late_reminder_goes_within_a_quarter_of_its_lead_time_and_no_later(
    client: httpx.AsyncClient,
    service: dict[str, str],
    customer: str,
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    day_id, hour_id = reminder_ids(await schedule(client, service, "bk-tolerance", customer))
    create = api.post("/Messages.json").mock(side_effect=lambda _: created(new_sid()))

    five_hours_late = DAY_BEFORE + timedelta(hours=5)
    assert await release_at(sessionmaker, five_hours_late) == [day_id]
    assert await send_at(outbox, day_id, five_hours_late) is Outcome.ACCEPTED
    twenty_minutes_late = HOUR_BEFORE + timedelta(minutes=20)
    assert await release_at(sessionmaker, twenty_minutes_late) == [hour_id]
    assert await send_at(outbox, hour_id, twenty_minutes_late) is Outcome.FAILED

    assert create.call_count == 1
    assert (await load(sessionmaker, hour_id)).status == "failed"


async def test_a_reminder_is_never_sent_late(
    client: httpx.AsyncClient,
    service: dict[str, str],
    customer: str,
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    ids = reminder_ids(await schedule(client, service, "bk-late", customer))
    create = api.post("/Messages.json").mock(side_effect=lambda _: created(new_sid()))
    after_the_start = START + TICK  # the sweeper was down until the booking began

    assert sorted(await release_at(sessionmaker, after_the_start)) == sorted(ids)
    for message_id in ids:
        assert await send_at(outbox, message_id, after_the_start) is Outcome.FAILED

    assert not create.called
    for message_id in ids:
        message = await load(sessionmaker, message_id)
        assert message.status == "failed"
        assert message.twilio_sid is None
        assert "expired" in (message.error_message or "")


# --- confirmation again, a reminder now ----------------------------------------------------


async def test_resend_booking_confirmation(
    client: httpx.AsyncClient,
    service: dict[str, str],
    customer: str,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    path = "/api/sms/resend-booking-confirmation"
    missing = await client.post(path, json={"booking_id": "bk-conf"}, headers=service)
    assert missing.status_code == 404
    assert missing.json()["code"] == "booking_confirmation_not_found"
    confirmed = await client.post(
        "/api/sms/notify",
        json={
            "event": "booking.confirmed",
            "data": {
                **BOOKING_DATA,
                "customer_name": "Ana",
                "seats": 2,
                "booking_reference": "BK-1",
            },
            "recipients": {"user_ids": [customer]},
            "reference": "bk-conf",
        },
        headers=service,
    )
    assert confirmed.status_code == 202, confirmed.text
    [first] = confirmed.json()["queued"]
    original = await load(sessionmaker, uuid.UUID(first["message_id"]))

    again = await client.post(path, json={"booking_id": "bk-conf"}, headers=service)

    assert again.status_code == 202, again.text
    assert again.json()["event"] == "booking.confirmed"
    [resent] = again.json()["queued"]
    assert resent["user_id"] == customer
    assert resent["message_id"] != first["message_id"]
    copy = await load(sessionmaker, uuid.UUID(resent["message_id"]))
    assert (
        copy.body
        == original.body
        == (
            "Hi Ana, your booking for Haircut with Studio Léa on May 15, 2025, 9:30 AM "
            "is confirmed (2 seats). Ref: BK-1"
        )
    )
    assert (copy.user_id, copy.reference, copy.status) == (original.user_id, "bk-conf", "queued")

    keyed = {**service, "Idempotency-Key": "resend-bk-conf-1"}
    once = await client.post(path, json={"booking_id": "bk-conf"}, headers=keyed)
    twice = await client.post(path, json={"booking_id": "bk-conf"}, headers=keyed)
    assert (once.status_code, twice.status_code) == (202, 202)
    assert twice.json() == once.json()
    assert len(await booking_messages(sessionmaker, "bk-conf")) == 3  # first, again, once


async def test_send_booking_reminder_now(
    client: httpx.AsyncClient,
    service: dict[str, str],
    customer: str,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    path = "/api/sms/send-booking-reminder"
    unknown = await client.post(path, json={"booking_id": "bk-nope"}, headers=service)
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "booking_not_found"
    await schedule(client, service, "bk-now", customer)

    with time_machine.travel(NOW, tick=False):
        now = await client.post(path, json={"booking_id": "bk-now"}, headers=service)
    with time_machine.travel(START + TICK, tick=False):
        started = await client.post(path, json={"booking_id": "bk-now"}, headers=service)

    assert now.status_code == 202, now.text
    [queued] = now.json()["queued"]
    assert (queued["user_id"], queued["status"]) == (customer, "queued")
    message = await load(sessionmaker, uuid.UUID(queued["message_id"]))
    assert message.status == "queued"
    assert message.body == "Reminder: Haircut with Studio Léa on May 15, 2025, 9:30 AM."
    assert message.expires_at == START
    assert started.status_code == 409
    assert started.json()["code"] == "booking_started"

    await client.delete("/api/sms/bookings/bk-now/reminders", headers=service)
    with time_machine.travel(NOW, tick=False):
        cancelled = await client.post(path, json={"booking_id": "bk-now"}, headers=service)
    assert cancelled.status_code == 409
    assert cancelled.json()["code"] == "booking_cancelled"


# --- refused requests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"offsets_minutes": []},
        {"offsets_minutes": [0]},
        {"offsets_minutes": [30 * 24 * 60 + 1]},
        {"offsets_minutes": [-60]},
        {"starts_at": "2025-05-15T13:30:00"},  # no zone: whose 13:30?
    ],
)
async def test_invalid_reminder_requests_are_422(
    client: httpx.AsyncClient, service: dict[str, str], customer: str, change: dict[str, Any]
) -> None:
    body = {
        "user_id": customer,
        "starts_at": START.isoformat(),
        "service_name": "Haircut",
        "provider_name": "Studio Léa",
        **change,
    }
    with time_machine.travel(NOW, tick=False):
        response = await client.put(
            "/api/sms/bookings/bk-bad/reminders", json=body, headers=service
        )

    assert response.status_code == 422, response.text
    [field] = change
    assert any(error["field"].startswith(f"body.{field}") for error in response.json()["errors"])
    shown = await client.get("/api/sms/bookings/bk-bad/reminders", headers=service)
    assert shown.status_code == 404


async def test_an_unknown_customer_is_404(
    client: httpx.AsyncClient,
    service: dict[str, str],
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    response = await schedule(client, service, "bk-ghost", "nobody")

    assert response.status_code == 404
    assert response.json()["code"] == "user_not_found"
    assert await booking_messages(sessionmaker, "bk-ghost") == []
    shown = await client.get("/api/sms/bookings/bk-ghost/reminders", headers=service)
    assert shown.status_code == 404


async def test_a_booking_too_far_ahead_for_its_reminders_is_422_on_starts_at(
    client: httpx.AsyncClient,
    service: dict[str, str],
    customer: str,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    # Messages are scheduled at most 90 days ahead: the 1 h reminder would be 120 days out.
    response = await schedule(client, service, "bk-far", customer, NOW + timedelta(days=120))

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "reminders_too_far_ahead"
    assert [error["field"] for error in response.json()["errors"]] == ["body.starts_at"]
    assert await booking_messages(sessionmaker, "bk-far") == []
    shown = await client.get("/api/sms/bookings/bk-far/reminders", headers=service)
    assert shown.status_code == 404
