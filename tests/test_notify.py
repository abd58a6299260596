"""POST /api/sms/notify (and /send with a template): each recipient's text in their language and
time zone, who is skipped and why, what is refused before anything is stored, quiet hours."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis.asyncio
import time_machine
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Scope
from app.core.crypto import PhoneCipher
from app.messages.models import Message, MessageEvent
from app.notifications import schemas as notify_schemas
from app.notifications.models import Notification
from app.optouts.service import opt_out
from app.users.models import User
from tests.test_messages_api import NUMBER, assert_problem, count_messages, put_user

MakeKey = Callable[..., Awaitable[dict[str, str]]]
Json = dict[str, Any]

NOTIFY = "/api/sms/notify"
SEND = "/api/sms/send"
PARIS_NUMBER = "+33612345678"
MEXICO_NUMBER = "+525512345678"
TOKYO_NUMBER = "+819012345678"

BOOKING: Json = {
    "customer_name": "Ana",
    "service_name": "Haircut",
    "provider_name": "Studio K",
    "starts_at": "2026-03-10T14:30:00Z",
    "seats": 2,
    "booking_reference": "BK-7",
}
TICKET: Json = {
    "title": "Checkout is down",
    "severity": "critical",
    "category": "technical",
    "created_by": "Dana",
    "link": "https://support.example.com/t/42",
}
TICKET_TEXT = (
    "New support ticket\n"
    "Title: Checkout is down\n"
    "Severity: Critical\n"
    "Category: Technical\n"
    "Created by: Dana\n"
    "\n"
    "View ticket: https://support.example.com/t/42"
)


@pytest.fixture
async def sender(make_api_key: MakeKey) -> dict[str, str]:
    return await make_api_key(Scope.SMS_SEND, name="ticket-service")


@pytest.fixture
async def manager(make_api_key: MakeKey) -> dict[str, str]:
    return await make_api_key(Scope.USERS_WRITE, name="user-manager")


async def notify(
    client: httpx.AsyncClient, headers: dict[str, str], **payload: Any
) -> httpx.Response:
    return await client.post(NOTIFY, json=payload, headers=headers)


async def notified(client: httpx.AsyncClient, headers: dict[str, str], **payload: Any) -> Json:
    response = await notify(client, headers, **payload)
    assert response.status_code == 202, response.text
    result: Json = response.json()
    return result


async def rows_of(session: AsyncSession, notification_id: str) -> dict[str, Message]:
    """The notification's messages as stored, by the recipient's user id."""
    statement = (
        select(User.external_id, Message)
        .join(User, User.id == Message.user_id)
        .where(Message.notification_id == uuid.UUID(notification_id))
        .execution_options(populate_existing=True)
    )
    found = (await session.execute(statement)).all()
    by_user: dict[str, Message] = dict(found)
    assert len(by_user) == len(found), "a user got two messages"
    return by_user


async def count_notifications(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Notification)) or 0)


async def set_preferences(
    client: httpx.AsyncClient, manager: dict[str, str], user_id: str, **changes: bool
) -> None:
    response = await client.put(f"/api/users/{user_id}/preferences", json=changes, headers=manager)
    assert response.status_code == 200, response.text


async def subscribe(
    client: httpx.AsyncClient, manager: dict[str, str], topic: str, user_ids: list[str]
) -> None:
    response = await client.put(
        f"/api/topics/{topic}/subscribers", json={"user_ids": user_ids}, headers=manager
    )
    assert response.status_code == 200, response.text


def us_number(n: int) -> str:
    return f"+1415555{2600 + n:04d}"


# --- each recipient reads it in their language and zone --------------------------------------


async def test_each_recipient_reads_the_event_in_their_locale_and_time_zone(
    client: httpx.AsyncClient,
    sender: dict[str, str],
    manager: dict[str, str],
    session: AsyncSession,
    redis_client: redis.asyncio.Redis,
) -> None:
    profiles = {
        "nyc": (us_number(1), "en", "America/New_York"),
        "nyc-2": (us_number(2), "en", "America/New_York"),
        "tokyo": (TOKYO_NUMBER, "en", "Asia/Tokyo"),
        "paris": (PARIS_NUMBER, "fr", "Europe/Paris"),
        "cdmx": (MEXICO_NUMBER, "es", "America/Mexico_City"),
    }
    for user_id, (phone, locale, zone) in profiles.items():
        await put_user(client, manager, user_id, phone=phone, locale=locale, time_zone=zone)

    result = await notified(
        client,
        sender,
        event="booking.confirmed",
        data=BOOKING,
        recipients={"user_ids": list(profiles)},
        reference="booking-7",
    )

    # 14:30 UTC on 10 March 2026: New York is already on summer time (UTC-4) since 8 March,
    # Paris still on winter time (UTC+1), Mexico City has had no summer time since 2022 (UTC-6).
    new_york = (
        "Hi Ana, your booking for Haircut with Studio K on Mar 10, 2026, 10:30 AM is "
        "confirmed (2 seats). Ref: BK-7"
    )
    expected = {
        "nyc": new_york,
        "nyc-2": new_york,
        "tokyo": (
            "Hi Ana, your booking for Haircut with Studio K on Mar 10, 2026, 11:30 PM is "
            "confirmed (2 seats). Ref: BK-7"
        ),
        "paris": (
            "Bonjour Ana, votre réservation pour Haircut avec Studio K le 10 mars 2026, 15:30 "
            "est confirmée (2 places). Réf. : BK-7"
        ),
        "cdmx": (
            "Hola Ana, tu reserva de Haircut con Studio K el 10 mar 2026, 8:30 está "
            "confirmada (2 plazas). Ref.: BK-7"
        ),
    }
    assert result["event"] == "booking.confirmed"
    assert result["skipped"] == []
    assert result["cancelled_reminders"] == []
    assert sorted(item["user_id"] for item in result["queued"]) == sorted(profiles)
    assert {item["status"] for item in result["queued"]} == {"queued"}
    rows = await rows_of(session, result["notification_id"])
    assert {user_id: row.body for user_id, row in rows.items()} == expected
    for item in result["queued"]:
        row = rows[item["user_id"]]
        assert row.id == uuid.UUID(item["message_id"])
        assert (row.status, row.category, row.reference) == (
            "queued",
            "booking_confirmation",
            "booking-7",
        )
        assert await redis_client.exists(f"arq:job:{row.id}") == 1
    stored = await session.get(Notification, uuid.UUID(result["notification_id"]))
    assert stored is not None
    assert (stored.event, stored.data, stored.reference) == (
        "booking.confirmed",
        BOOKING,
        "booking-7",
    )


# --- a team in a topic --------------------------------------------------------------------------


async def test_a_team_of_50_is_notified_in_one_call_and_the_rest_skipped_with_reasons(
    client: httpx.AsyncClient,
    sender: dict[str, str],
    manager: dict[str, str],
    session: AsyncSession,
    cipher: PhoneCipher,
    redis_client: redis.asyncio.Redis,
) -> None:
    reasons: dict[str, str | None] = {}
    for n in range(30):
        await put_user(client, manager, f"agent-{n:02d}", phone=us_number(n))
        reasons[f"agent-{n:02d}"] = None
    for n in range(5):
        await put_user(client, manager, f"numberless-{n}", phone=None)
        reasons[f"numberless-{n}"] = "no_phone_number"
        await put_user(client, manager, f"unverified-{n}", phone=us_number(30 + n), verified=False)
        reasons[f"unverified-{n}"] = "phone_not_verified"
        await put_user(client, manager, f"muted-{n}", phone=us_number(35 + n))
        await set_preferences(client, manager, f"muted-{n}", ticket_updates=False)
        reasons[f"muted-{n}"] = "preference_off"
        await put_user(client, manager, f"stopped-{n}", phone=us_number(40 + n))
        await opt_out(session, cipher.blind_index(us_number(40 + n)), source="test", keyword="STOP")
        reasons[f"stopped-{n}"] = "opted_out"
    await session.flush()
    await subscribe(client, manager, "team-50", list(reasons))

    result = await notified(
        client, sender, event="ticket.created", data=TICKET, recipients={"topic": "team-50"}
    )

    queued = {item["user_id"]: item for item in result["queued"]}
    skipped = {item["user_id"]: item for item in result["skipped"]}
    assert len(result["queued"]) == 30
    assert len(result["skipped"]) == 20
    assert sorted(queued) == sorted(user for user, reason in reasons.items() if reason is None)
    assert {user: item["reason"] for user, item in skipped.items()} == {
        user: reason for user, reason in reasons.items() if reason is not None
    }
    assert {item["status"] for item in queued.values()} == {"queued"}
    rows = await rows_of(session, result["notification_id"])
    assert len(rows) == 50
    assert await count_messages(session) == 50
    assert {user: (row.status, row.suppression_reason) for user, row in rows.items()} == {
        user: ("queued", None) if reason is None else ("suppressed", reason)
        for user, reason in reasons.items()
    }
    for user, item in [*queued.items(), *skipped.items()]:
        assert rows[user].id == uuid.UUID(item["message_id"])
        assert rows[user].body == TICKET_TEXT
        assert rows[user].category == "ticket"
        on_queue = await redis_client.exists(f"arq:job:{rows[user].id}")
        assert on_queue == (1 if reasons[user] is None else 0), user
    assert rows["numberless-0"].to_encrypted is None
    assert rows["stopped-0"].to_encrypted is not None


async def test_user_ids_and_a_topic_reach_each_user_once(
    client: httpx.AsyncClient,
    sender: dict[str, str],
    manager: dict[str, str],
    session: AsyncSession,
) -> None:
    for n, user_id in enumerate(["amy", "ben", "cat", "dov"]):
        await put_user(client, manager, user_id, phone=us_number(n))
    await subscribe(client, manager, "support", ["amy", "ben", "cat"])
    users_before = int(await session.scalar(select(func.count()).select_from(User)) or 0)

    result = await notified(
        client,
        sender,
        event="ticket.created",
        data=TICKET,
        recipients={
            "user_ids": ["ben", "ghost", "dov", "ben", "ghost", "phantom", "dov"],
            "topic": "support",
        },
    )

    assert sorted(item["user_id"] for item in result["queued"]) == ["amy", "ben", "cat", "dov"]
    assert sorted(result["skipped"], key=lambda item: item["user_id"]) == [
        {"user_id": "ghost", "reason": "unknown_user", "message_id": None},
        {"user_id": "phantom", "reason": "unknown_user", "message_id": None},
    ]
    rows = await rows_of(session, result["notification_id"])
    assert sorted(rows) == ["amy", "ben", "cat", "dov"]
    assert await count_messages(session) == 4
    # Unknown users are named, not created.
    assert int(await session.scalar(select(func.count()).select_from(User)) or 0) == users_before


# --- refused before anything is stored ----------------------------------------------------------


async def assert_nothing_stored(session: AsyncSession) -> None:
    assert await count_messages(session) == 0
    assert await count_notifications(session) == 0


async def test_missing_template_data_is_422_naming_every_missing_field(
    client: httpx.AsyncClient,
    sender: dict[str, str],
    manager: dict[str, str],
    session: AsyncSession,
) -> None:
    await put_user(client, manager, "amy")
    await put_user(client, manager, "numberless", phone=None)

    for recipients in [
        {"user_ids": ["amy", "numberless"]},
        {"user_ids": ["numberless"]},  # only a suppressed message would be stored
        {"user_ids": ["ghost"]},  # nobody to render it for: the data is still checked
    ]:
        response = await notify(
            client,
            sender,
            event="ticket.created",
            data={"title": "Checkout is down", "severity": "  ", "link": ""},
            recipients=recipients,
        )

        problem = assert_problem(response, 422, "missing_template_data")
        assert problem["errors"] == [
            {"field": f"body.data.{name}", "message": "Field required", "type": "missing"}
            for name in ("severity", "category", "created_by", "link")
        ], recipients
        await assert_nothing_stored(session)


async def test_unknown_events_and_one_time_codes_are_refused(
    client: httpx.AsyncClient,
    sender: dict[str, str],
    manager: dict[str, str],
    session: AsyncSession,
) -> None:
    await put_user(client, manager, "amy")

    unknown = await notify(
        client, sender, event="ticket.deleted", data=TICKET, recipients={"user_ids": ["amy"]}
    )
    problem = assert_problem(unknown, 422, "validation_error")
    assert [error["field"] for error in problem["errors"]] == ["body.event"]

    for event in ("auth.two_factor_code", "phone.verification_code"):
        code = await notify(
            client,
            sender,
            event=event,
            data={"code": "123456", "expires_in_minutes": 10},
            recipients={"user_ids": ["amy"]},
        )
        problem = assert_problem(code, 422, "validation_error")
        assert [error["field"] for error in problem["errors"]] == ["body.event"], event

    cancelled: Json = {
        "event": "booking.cancelled",
        "data": {key: BOOKING[key] for key in ("service_name", "provider_name", "starts_at")},
        "recipients": {"user_ids": ["amy"]},
    }
    without_reference = await client.post(NOTIFY, json=cancelled, headers=sender)
    problem = assert_problem(without_reference, 422, "validation_error")
    assert "reference" in problem["detail"]
    await assert_nothing_stored(session)

    with_reference = await client.post(
        NOTIFY, json={**cancelled, "reference": "booking-7"}, headers=sender
    )
    assert with_reference.status_code == 202, with_reference.text
    assert len(with_reference.json()["queued"]) == 1


async def test_a_rendered_text_over_1600_characters_is_refused(
    client: httpx.AsyncClient,
    sender: dict[str, str],
    manager: dict[str, str],
    session: AsyncSession,
) -> None:
    await put_user(client, manager, "amy")
    # The English ticket.created text around a title of one character has 130 characters.
    longest = {**TICKET, "title": "x" * (1600 - 129)}

    too_long = await notify(
        client,
        sender,
        event="ticket.created",
        data={**longest, "title": longest["title"] + "x"},
        recipients={"user_ids": ["amy"]},
    )

    problem = assert_problem(too_long, 422, "body_too_long")
    assert "1601" in problem["detail"]
    await assert_nothing_stored(session)
    just_fits = await notified(
        client, sender, event="ticket.created", data=longest, recipients={"user_ids": ["amy"]}
    )
    rows = await rows_of(session, just_fits["notification_id"])
    assert len(rows["amy"].body or "") == 1600


async def test_data_values_that_are_not_text_numbers_or_dates_are_422(
    client: httpx.AsyncClient,
    sender: dict[str, str],
    manager: dict[str, str],
    session: AsyncSession,
) -> None:
    await put_user(client, manager, "amy")
    for title in [{"text": "nested"}, ["a", "list"], "null\x00byte", True, None]:
        response = await notify(
            client,
            sender,
            event="ticket.created",
            data={**TICKET, "title": title},
            recipients={"user_ids": ["amy"]},
        )
        problem = assert_problem(response, 422, "validation_error")
        assert all(error["field"].startswith("body.data.title") for error in problem["errors"])

    for starts_at, message in [
        ("next Tuesday at noon", "not an ISO 8601 date and time"),
        ("10/03/2026 14:30", "not an ISO 8601 date and time"),
        ("2026-03-10T14:30:00", "needs a time zone offset (e.g. `Z` or `+02:00`)"),
    ]:
        response = await notify(
            client,
            sender,
            event="booking.confirmed",
            data={**BOOKING, "starts_at": starts_at},
            recipients={"user_ids": ["amy"]},
        )
        problem = assert_problem(response, 422, "invalid_template_data")
        assert problem["errors"] == [
            {"field": "body.data.starts_at", "message": message, "type": "invalid"}
        ], starts_at
    await assert_nothing_stored(session)


# --- retries, scheduling, access ----------------------------------------------------------------


async def test_an_idempotency_key_replays_the_first_answer(
    client: httpx.AsyncClient,
    sender: dict[str, str],
    manager: dict[str, str],
    session: AsyncSession,
) -> None:
    await put_user(client, manager, "amy")
    await put_user(client, manager, "ben", phone=us_number(1))
    keyed = {**sender, "Idempotency-Key": "ticket-42-created"}
    payload: Json = {
        "event": "ticket.created",
        "data": TICKET,
        "recipients": {"user_ids": ["amy", "ben", "ghost"]},
    }

    first = await client.post(NOTIFY, json=payload, headers=keyed)
    again = await client.post(NOTIFY, json=payload, headers=keyed)

    assert first.status_code == again.status_code == 202, again.text
    assert again.json() == first.json()
    assert len(first.json()["queued"]) == 2
    assert await count_messages(session) == 2
    assert await count_notifications(session) == 1

    other = await client.post(
        NOTIFY, json={**payload, "recipients": {"user_ids": ["amy"]}}, headers=keyed
    )
    assert_problem(other, 422, "idempotency_key_reused")
    assert await count_messages(session) == 2


async def test_a_future_send_at_schedules_every_message(
    client: httpx.AsyncClient,
    sender: dict[str, str],
    manager: dict[str, str],
    session: AsyncSession,
    redis_client: redis.asyncio.Redis,
) -> None:
    await put_user(client, manager, "amy")
    await put_user(client, manager, "ben", phone=us_number(1))
    send_at = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)

    result = await notified(
        client,
        sender,
        event="ticket.created",
        data=TICKET,
        recipients={"user_ids": ["amy", "ben"]},
        send_at=send_at.isoformat(),
    )

    assert [item["status"] for item in result["queued"]] == ["scheduled", "scheduled"]
    rows = await rows_of(session, result["notification_id"])
    for row in rows.values():
        assert (row.status, row.send_at) == ("scheduled", send_at)
        # A job deferred to its time, not one to run now.
        assert await redis_client.zscore("arq:queue", str(row.id)) == round(
            send_at.timestamp() * 1000
        )


async def test_notify_needs_a_key_with_sms_send(
    client: httpx.AsyncClient,
    make_api_key: MakeKey,
    manager: dict[str, str],
    session: AsyncSession,
) -> None:
    await put_user(client, manager, "amy")
    payload: Json = {"event": "ticket.created", "data": TICKET, "recipients": {"user_ids": ["amy"]}}

    assert_problem(await client.post(NOTIFY, json=payload), 401, "missing_credentials")
    reader = await make_api_key(Scope.SMS_READ, Scope.USERS_WRITE, name="reader")
    assert_problem(await client.post(NOTIFY, json=payload, headers=reader), 403, "missing_scope")
    await assert_nothing_stored(session)


async def test_a_topic_larger_than_the_limit_is_refused(
    client: httpx.AsyncClient,
    sender: dict[str, str],
    session: AsyncSession,
) -> None:
    limit = notify_schemas.MAX_RECIPIENTS
    await session.execute(
        text(
            "INSERT INTO users (id, external_id) "
            "SELECT gen_random_uuid(), 'crowd-' || n FROM generate_series(1, :count) AS n"
        ),
        {"count": limit + 1},
    )
    await session.execute(
        text(
            "INSERT INTO topic_subscriptions (topic, user_id) "
            "SELECT 'everyone', id FROM users WHERE external_id LIKE 'crowd-%'"
        )
    )
    await session.flush()

    response = await notify(
        client, sender, event="ticket.created", data=TICKET, recipients={"topic": "everyone"}
    )

    assert_problem(response, 422, "too_many_recipients")
    await assert_nothing_stored(session)


# --- /send with a template ----------------------------------------------------------------------

PAYMENT: Json = {
    "amount": 49.5,
    "currency": "EUR",
    "service_name": "Yoga",
    "booking_reference": "BK-9",
}


async def test_send_renders_a_template_for_a_user_or_a_number(
    client: httpx.AsyncClient,
    sender: dict[str, str],
    manager: dict[str, str],
    session: AsyncSession,
) -> None:
    await put_user(
        client, manager, "marie", phone=PARIS_NUMBER, locale="fr", time_zone="Europe/Paris"
    )

    to_user = await client.post(
        SEND,
        json={"user_id": "marie", "template": "payment.succeeded", "data": PAYMENT},
        headers=sender,
    )
    assert to_user.status_code == 202, to_user.text
    message = to_user.json()
    assert message["body"] == "Paiement de 49,50 € reçu pour Yoga. Réf. : BK-9. Merci !"
    assert (message["status"], message["category"]) == ("queued", "payment")

    # A bare number: the caller's locale, the number's zone (Mexico City: 8:30 on 10 March).
    to_number = await client.post(
        SEND,
        json={
            "to": MEXICO_NUMBER,
            "template": "booking.confirmed",
            "data": {**BOOKING, "customer_name": "Lucía", "seats": 1},
            "locale": "es",
        },
        headers=sender,
    )
    assert to_number.status_code == 202, to_number.text
    assert to_number.json()["body"] == (
        "Hola Lucía, tu reserva de Haircut con Studio K el 10 mar 2026, 8:30 está "
        "confirmada (1 plaza). Ref.: BK-7"
    )
    assert to_number.json()["category"] == "booking_confirmation"
    stored = await session.get(Message, uuid.UUID(to_number.json()["id"]))
    assert stored is not None
    assert stored.body == to_number.json()["body"]

    # A Spanish mobile may be on the mainland or the Canaries: the caller says which.
    to_madrid = await client.post(
        SEND,
        json={
            "to": "+34612345678",
            "template": "booking.confirmed",
            "data": {**BOOKING, "customer_name": "Lucía", "seats": 1},
            "locale": "es",
            "time_zone": "Europe/Madrid",
        },
        headers=sender,
    )
    assert to_madrid.status_code == 202, to_madrid.text
    assert "el 10 mar 2026, 15:30 está" in to_madrid.json()["body"]


async def test_send_refuses_a_template_with_a_body_a_wrong_category_or_missing_data(
    client: httpx.AsyncClient,
    sender: dict[str, str],
    manager: dict[str, str],
    session: AsyncSession,
) -> None:
    await put_user(client, manager, "amy")
    base: Json = {"user_id": "amy", "template": "payment.succeeded", "data": PAYMENT}

    for payload in [
        {**base, "body": "Thanks!"},
        {**base, "category": "marketing"},
        {"user_id": "amy", "body": "Thanks!", "data": PAYMENT},
        {
            **base,
            "template": "auth.two_factor_code",
            "data": {"code": "1", "expires_in_minutes": 5},
        },
        # A user reads in their own language and zone; these are for a bare number.
        {**base, "locale": "es"},
        {**base, "time_zone": "Europe/Madrid"},
        {"to": "+34612345678", "body": "Hola", "time_zone": "Europe/Madrid"},
    ]:
        response = await client.post(SEND, json=payload, headers=sender)
        assert_problem(response, 422, "validation_error")

    missing = await client.post(
        SEND, json={**base, "data": {"amount": 10, "currency": "EUR"}}, headers=sender
    )
    problem = assert_problem(missing, 422, "missing_template_data")
    assert [error["field"] for error in problem["errors"]] == [
        "body.data.service_name",
        "body.data.booking_reference",
    ]
    assert await count_messages(session) == 0


# --- quiet hours -------------------------------------------------------------------------------

# 23:00 in Paris on a winter evening (UTC+1); the next 08:00 there is 07:00 UTC the next day.
PARIS_23H = datetime(2027, 1, 14, 22, 0, tzinfo=UTC)
PARIS_NOON = datetime(2027, 1, 15, 11, 0, tzinfo=UTC)
PARIS_8H_NEXT = datetime(2027, 1, 15, 7, 0, tzinfo=UTC)
QUIET_DETAIL = "held for the recipient's quiet hours"


async def details(session: AsyncSession, message_id: str) -> list[tuple[str, str | None]]:
    statement = (
        select(MessageEvent.status, MessageEvent.detail)
        .where(MessageEvent.message_id == uuid.UUID(message_id))
        .order_by(MessageEvent.id)
    )
    return [(status, detail) for status, detail in (await session.execute(statement)).all()]


async def test_marketing_at_night_waits_for_the_recipients_morning(
    client: httpx.AsyncClient,
    sender: dict[str, str],
    manager: dict[str, str],
    session: AsyncSession,
    redis_client: redis.asyncio.Redis,
) -> None:
    await put_user(client, manager, "parisian", phone=us_number(1), time_zone="Europe/Paris")
    await put_user(client, manager, "by-number", phone=PARIS_NUMBER)  # no zone: the number's
    await put_user(client, manager, "californian", phone=NUMBER)  # no zone: 14:00 in SF
    for user_id in ("parisian", "by-number", "californian"):
        await set_preferences(client, manager, user_id, marketing=True)
    offer: Json = {"category": "marketing", "body": "-20% on everything this weekend."}

    with time_machine.travel(PARIS_23H, tick=False):
        held = [
            await client.post(SEND, json={**offer, "user_id": user_id}, headers=sender)
            for user_id in ("parisian", "by-number")
        ]
        afternoon = await client.post(
            SEND, json={**offer, "user_id": "californian"}, headers=sender
        )
        security = await client.post(
            SEND,
            json={"user_id": "parisian", "category": "security", "body": "New sign-in."},
            headers=sender,
        )
        ticket = await notified(
            client,
            sender,
            event="ticket.created",
            data=TICKET,
            recipients={"user_ids": ["parisian"]},
        )
    with time_machine.travel(PARIS_NOON, tick=False):
        noon = await client.post(SEND, json={**offer, "user_id": "parisian"}, headers=sender)

    for response in held:
        assert response.status_code == 202, response.text
        message = response.json()
        assert message["status"] == "scheduled", message["user_id"]
        assert datetime.fromisoformat(message["send_at"]) == PARIS_8H_NEXT
        assert await details(session, message["id"]) == [("scheduled", QUIET_DETAIL)]
        row = await session.get(Message, uuid.UUID(message["id"]))
        assert row is not None
        assert row.next_attempt_at == PARIS_8H_NEXT
        # Its job waits for the morning too.
        score = await redis_client.zscore("arq:queue", message["id"])
        assert score == round(PARIS_8H_NEXT.timestamp() * 1000)
    for response in (afternoon, security, noon):
        assert response.status_code == 202, response.text
        assert (response.json()["status"], response.json()["send_at"]) == ("queued", None)
        assert await details(session, response.json()["id"]) == [("queued", None)]
    assert [item["status"] for item in ticket["queued"]] == ["queued"]
