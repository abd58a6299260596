"""Sending one message, reading it back, listing, cancelling, and the self-test."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import redis.asyncio
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth import api_keys
from app.auth.models import ApiKey
from app.auth.principal import Scope
from app.core.crypto import PhoneCipher
from app.core.deps import get_sessionmaker
from app.core.settings import Settings
from app.main import create_app
from app.messages.models import Message, MessageEvent
from app.optouts.service import opt_out
from app.users.models import User
from tests.conftest import as_user

MakeKey = Callable[..., Awaitable[dict[str, str]]]
Json = dict[str, Any]

SEND = "/api/sms/send"
TEST = "/api/sms/test"
LIST = "/api/sms/messages"
NUMBER = "+14155552671"
MASKED = "+1415*****71"
GB_NUMBER = "+447700900123"
TOKYO = timezone(timedelta(hours=9))


@pytest.fixture
async def sender(make_api_key: MakeKey) -> dict[str, str]:
    return await make_api_key(Scope.SMS_SEND, name="booking-service")


@pytest.fixture
async def manager(make_api_key: MakeKey) -> dict[str, str]:
    return await make_api_key(Scope.USERS_WRITE, name="user-manager")


async def key_id(session: AsyncSession, headers: dict[str, str]) -> str:
    secret = headers["Authorization"].removeprefix("Bearer ")
    found = await session.scalar(
        select(ApiKey.id).where(ApiKey.key_hash == api_keys.hash_key(secret))
    )
    assert found is not None
    return str(found)


async def count_messages(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Message)) or 0)


def assert_problem(response: httpx.Response, status: int, code: str) -> Json:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: Json = response.json()
    assert problem["code"] == code
    assert problem["status"] == status
    assert problem["type"] == f"urn:sms-service:problem:{code}"
    return problem


async def put_user(
    client: httpx.AsyncClient,
    manager: dict[str, str],
    user_id: str,
    *,
    phone: str | None = NUMBER,
    verified: bool = True,
    **extra: Any,
) -> None:
    payload: Json = dict(extra)
    if phone is not None:
        payload |= {"phone_number": phone, "phone_verified": verified}
    response = await client.put(f"/api/users/{user_id}", json=payload, headers=manager)
    assert response.status_code in (200, 201), response.text


async def send(
    client: httpx.AsyncClient, headers: dict[str, str], **payload: Any
) -> httpx.Response:
    payload.setdefault("body", "Your booking is confirmed.")
    if "user_id" not in payload:
        payload.setdefault("to", NUMBER)
    return await client.post(SEND, json=payload, headers=headers)


async def sent(client: httpx.AsyncClient, headers: dict[str, str], **payload: Any) -> Json:
    response = await send(client, headers, **payload)
    assert response.status_code == 202, response.text
    body: Json = response.json()
    return body


# --- POST /api/sms/send: who may send ---------------------------------------------------------


async def test_a_service_sends_to_a_number_and_gets_the_stored_message(
    client: httpx.AsyncClient,
    sender: dict[str, str],
    session: AsyncSession,
    redis_client: redis.asyncio.Redis,
) -> None:
    response = await send(client, sender, to="+1 (415) 555-2671", reference="booking-42")

    assert response.status_code == 202, response.text
    message = response.json()
    assert message["status"] == "queued"
    assert message["to"] == MASKED
    assert message["user_id"] is None
    assert message["category"] == "transactional"
    assert message["body"] == "Your booking is confirmed."
    assert message["encoding"] == "GSM-7"
    assert message["segments"] == 1
    assert message["reference"] == "booking-42"
    assert message["requested_by"] == f"api_key:{await key_id(session, sender)}"
    assert message["suppression_reason"] is None
    assert message["twilio_sid"] is None
    assert message["attempts"] == 0
    assert [(event["status"], event["source"]) for event in message["history"]] == [
        ("queued", "api")
    ]
    row = await session.get(Message, uuid.UUID(message["id"]))
    assert row is not None
    assert row.status == "queued"
    assert NUMBER.encode() not in (row.to_encrypted or b"")  # stored encrypted
    # The send job is on the queue under the message's id (enqueued after the commit).
    assert await redis_client.exists(f"arq:job:{message['id']}") == 1


async def test_a_user_token_without_admin_may_not_send(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    response = await send(client, as_user("alice"))

    assert_problem(response, 403, "missing_scope")
    assert await count_messages(session) == 0


async def test_an_admin_user_may_send(client: httpx.AsyncClient, session: AsyncSession) -> None:
    message = await sent(client, as_user("root", admin=True))

    assert message["requested_by"] == "user:root"
    assert await count_messages(session) == 1


async def test_a_key_without_sms_send_may_not_send(
    client: httpx.AsyncClient, make_api_key: MakeKey, session: AsyncSession
) -> None:
    response = await send(client, await make_api_key(Scope.SMS_READ, Scope.USERS_WRITE))

    assert_problem(response, 403, "missing_scope")
    assert await count_messages(session) == 0


async def test_no_credentials_is_401(client: httpx.AsyncClient, session: AsyncSession) -> None:
    assert_problem(await send(client, {}), 401, "missing_credentials")
    assert await count_messages(session) == 0


# --- to a number ---------------------------------------------------------------------------------


async def test_numbers_in_any_format_are_accepted(
    client: httpx.AsyncClient, sender: dict[str, str]
) -> None:
    for given, country, masked in [
        ("00 44 7700 900123", None, "+4477******23"),
        ("(415) 555-2671", None, MASKED),
        ("06 12 34 56 78", "fr", "+3361*****78"),
    ]:
        payload: Json = {"to": given}
        if country:
            payload["country"] = country

        message = await sent(client, sender, **payload)

        assert message["to"] == masked, given


async def test_invalid_and_premium_numbers_are_refused(
    client: httpx.AsyncClient, sender: dict[str, str], session: AsyncSession
) -> None:
    for number, reason in [
        ("hello", "not_a_number"),
        ("12", "too_short"),
        ("+1 900 555 0123", "not_sms_capable"),  # premium rate
        ("+44 871 123 4567", "not_sms_capable"),  # shared cost / premium (UK 0871)
        ("+1 800 555 0199", "not_sms_capable"),  # toll free
    ]:
        response = await send(client, sender, to=number)

        problem = assert_problem(response, 422, "invalid_phone_number")
        assert problem["errors"] == [
            {"field": "body.to", "message": problem["detail"], "type": reason}
        ], number
    assert await count_messages(session) == 0


@pytest.fixture
async def us_only(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with SMS_ALLOWED_COUNTRIES=US, on the test's transaction."""
    application = create_app(settings.model_copy(update={"sms_allowed_countries": ["US"]}))
    application.dependency_overrides[get_sessionmaker] = lambda: sessionmaker
    async with LifespanManager(application) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


async def test_a_country_outside_the_allowed_ones_is_refused(
    us_only: httpx.AsyncClient,
    sender: dict[str, str],
    manager: dict[str, str],
    session: AsyncSession,
) -> None:
    refused = await send(us_only, sender, to=GB_NUMBER)
    assert_problem(refused, 422, "country_not_allowed")
    assert await count_messages(session) == 0

    assert (await sent(us_only, sender, to=NUMBER))["status"] == "queued"

    # A user's number in another country: recorded as suppressed, the caller learns why.
    await put_user(us_only, manager, "brit", phone=GB_NUMBER)
    message = await sent(us_only, sender, user_id="brit")
    assert message["status"] == "suppressed"
    assert message["suppression_reason"] == "country_not_allowed"


async def test_a_number_on_the_suppression_list_is_suppressed(
    client: httpx.AsyncClient,
    sender: dict[str, str],
    session: AsyncSession,
    cipher: PhoneCipher,
    redis_client: redis.asyncio.Redis,
) -> None:
    await opt_out(session, cipher.blind_index(NUMBER), source="test", keyword="STOP")
    await session.flush()

    message = await sent(client, sender, to="+1 415 555 2671", category="security")

    assert message["status"] == "suppressed"
    assert message["suppression_reason"] == "opted_out"
    assert message["final_at"] is not None
    assert [change["status"] for change in message["history"]] == ["suppressed"]
    assert await redis_client.exists(f"arq:job:{message['id']}") == 0
    # Stored once, suppressed, with the event saying why: nothing queued left behind.
    stored = (await session.execute(select(Message.id, Message.status))).all()
    assert [(str(id_), status) for id_, status in stored] == [(message["id"], "suppressed")]
    events = (await session.execute(select(MessageEvent.status, MessageEvent.detail))).all()
    assert [tuple(event) for event in events] == [("suppressed", "opted_out")]


# --- to a user -------------------------------------------------------------------------------


async def test_an_unknown_user_is_404(
    client: httpx.AsyncClient, sender: dict[str, str], session: AsyncSession
) -> None:
    response = await send(client, sender, user_id="nobody")

    assert_problem(response, 404, "user_not_found")
    assert await count_messages(session) == 0
    assert await session.scalar(select(User).where(User.external_id == "nobody")) is None


async def test_a_verified_user_gets_the_message(
    client: httpx.AsyncClient,
    sender: dict[str, str],
    manager: dict[str, str],
    redis_client: redis.asyncio.Redis,
) -> None:
    await put_user(client, manager, "verified")

    message = await sent(client, sender, user_id="verified", category="booking_confirmation")

    assert message["status"] == "queued"
    assert message["user_id"] == "verified"
    assert message["to"] == MASKED
    assert message["category"] == "booking_confirmation"
    assert await redis_client.exists(f"arq:job:{message['id']}") == 1


async def test_a_user_without_a_usable_number_is_suppressed(
    client: httpx.AsyncClient,
    sender: dict[str, str],
    manager: dict[str, str],
    redis_client: redis.asyncio.Redis,
    session: AsyncSession,
) -> None:
    await put_user(client, manager, "numberless", phone=None, locale="en")
    await put_user(client, manager, "unverified", verified=False)

    for user_id, reason in [
        ("numberless", "no_phone_number"),
        ("unverified", "phone_not_verified"),
    ]:
        response = await send(client, sender, user_id=user_id)

        assert response.status_code == 202, response.text
        message = response.json()
        assert message["status"] == "suppressed"
        assert message["suppression_reason"] == reason
        assert message["user_id"] == user_id
        assert message["to"] == (None if user_id == "numberless" else "+1415*****71")
        assert [(event["status"], event["source"]) for event in message["history"]] == [
            ("suppressed", "api")
        ]
        assert await redis_client.exists(f"arq:job:{message['id']}") == 0
        row = await session.get(Message, uuid.UUID(message["id"]))
        assert row is not None
        assert (row.status, row.suppression_reason) == ("suppressed", reason)


async def test_sms_disabled_suppresses_all_but_security(
    client: httpx.AsyncClient, sender: dict[str, str], manager: dict[str, str]
) -> None:
    await put_user(client, manager, "quiet", sms_enabled=False)

    ordinary = await sent(client, sender, user_id="quiet", category="transactional")
    security = await sent(client, sender, user_id="quiet", category="security")

    assert (ordinary["status"], ordinary["suppression_reason"]) == ("suppressed", "sms_disabled")
    assert (security["status"], security["suppression_reason"]) == ("queued", None)


async def test_a_category_whose_preference_is_off_is_suppressed(
    client: httpx.AsyncClient, sender: dict[str, str], manager: dict[str, str]
) -> None:
    await put_user(client, manager, "shopper")

    marketing = await sent(client, sender, user_id="shopper", category="marketing")
    assert (marketing["status"], marketing["suppression_reason"]) == (
        "suppressed",
        "preference_off",
    )

    changed = await client.put(
        "/api/users/shopper/preferences",
        json={"marketing": True, "ticket_updates": False},
        headers=manager,
    )
    assert changed.status_code == 200, changed.text
    allowed = await sent(client, sender, user_id="shopper", category="marketing")
    # Queued, or scheduled for the morning when the test runs in the recipient's quiet hours
    # (tests/test_quiet_hours_sending.py); never suppressed.
    assert allowed["suppression_reason"] is None
    assert allowed["status"] in ("queued", "scheduled")
    ticket = await sent(client, sender, user_id="shopper", category="ticket")
    assert (ticket["status"], ticket["suppression_reason"]) == ("suppressed", "preference_off")


async def test_a_user_whose_number_replied_stop_is_suppressed(
    client: httpx.AsyncClient,
    sender: dict[str, str],
    manager: dict[str, str],
    session: AsyncSession,
    cipher: PhoneCipher,
) -> None:
    await put_user(client, manager, "stopped")
    await opt_out(session, cipher.blind_index(NUMBER), source="inbound_sms", keyword="STOP")
    await session.flush()

    for category in ("transactional", "security"):
        message = await sent(client, sender, user_id="stopped", category=category)
        assert (message["status"], message["suppression_reason"]) == ("suppressed", "opted_out")


async def test_a_request_without_exactly_one_recipient_is_422(
    client: httpx.AsyncClient, sender: dict[str, str], session: AsyncSession
) -> None:
    for payload in [
        {"to": NUMBER, "user_id": "someone", "body": "hi"},
        {"body": "hi"},
        {"user_id": "someone", "country": "GB", "body": "hi"},
        {"to": NUMBER, "body": "hi", "unknown": 1},
        {"to": NUMBER, "body": "hi", "category": "gossip"},
    ]:
        response = await client.post(SEND, json=payload, headers=sender)

        problem = assert_problem(response, 422, "validation_error")
        assert problem["errors"], payload
    assert await count_messages(session) == 0


# --- the body ----------------------------------------------------------------------------------


async def test_encoding_and_segments_are_computed(
    client: httpx.AsyncClient, sender: dict[str, str], session: AsyncSession
) -> None:
    for body, encoding, segments in [
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("a" * 306, "GSM-7", 2),
        ("a" * 307, "GSM-7", 3),
        ("€" * 80, "GSM-7", 1),  # extension characters take two septets
        ("€" * 81, "GSM-7", 2),
        ("Hi 😀", "UCS-2", 1),
        ("😀" * 35, "UCS-2", 1),  # 70 UTF-16 units
        ("😀" * 36, "UCS-2", 2),
        ("é" * 70 + "ł", "UCS-2", 2),  # é is GSM-7, ł is not: all of it is UCS-2
        ("a" * 1600, "GSM-7", 11),
    ]:
        message = await sent(client, sender, body=body)

        assert (message["encoding"], message["segments"]) == (encoding, segments), body[:5]
        assert message["body"] == body
        row = await session.get(Message, uuid.UUID(message["id"]))
        assert row is not None
        assert (row.encoding, row.segments, row.body) == (encoding, segments, body)


async def test_smart_encoding_keeps_typographic_text_in_gsm7(
    client: httpx.AsyncClient, sender: dict[str, str]
) -> None:
    body = "It\u2019s \u201cconfirmed\u201d \u2013 see you soon\u2026"

    plain = await sent(client, sender, body=body)
    smart = await sent(client, sender, body=body, smart_encoding=True)

    assert plain["encoding"] == "UCS-2"
    assert plain["body"] == body
    assert smart["encoding"] == "GSM-7"
    assert smart["segments"] == 1
    assert smart["body"] == 'It\'s "confirmed" - see you soon...'


async def test_a_body_over_1600_characters_after_rendering_is_refused(
    client: httpx.AsyncClient, sender: dict[str, str], session: AsyncSession
) -> None:
    problem = assert_problem(await send(client, sender, body="a" * 1601), 422, "body_too_long")
    assert "1601 characters" in problem["detail"]
    assert [error["field"] for error in problem["errors"]] == ["body.body"]
    # 1599 characters, but the ellipsis becomes three dots: 1601 once smart-encoded.
    grows = "a" * 1598 + "…"
    assert_problem(
        await send(client, sender, body=grows, smart_encoding=True), 422, "body_too_long"
    )
    assert await count_messages(session) == 0
    assert (await sent(client, sender, body=grows))["segments"] == 24  # UCS-2, 67 a segment


async def test_an_empty_or_missing_body_is_422(
    client: httpx.AsyncClient, sender: dict[str, str], session: AsyncSession
) -> None:
    for body in ["", None, "x" * 4001]:
        payload: Json = {"to": NUMBER}
        if body is not None:
            payload["body"] = body

        response = await client.post(SEND, json=payload, headers=sender)

        problem = assert_problem(response, 422, "validation_error")
        # Missing: neither `body` nor `template` was given, which is the request's fault.
        expected = "body" if body is None else "body.body"
        assert [error["field"] for error in problem["errors"]] == [expected]
    assert await count_messages(session) == 0


async def test_one_time_codes_cannot_be_sent_through_send(
    client: httpx.AsyncClient, sender: dict[str, str], session: AsyncSession
) -> None:
    # A code's body is never stored, so the outbox could not send it: only the code
    # endpoints may send one.
    response = await client.post(
        SEND,
        json={"to": NUMBER, "body": "Your code is 123456", "category": "one_time_code"},
        headers=sender,
    )

    assert_problem(response, 422, "validation_error")
    assert await count_messages(session) == 0


# --- send_at -----------------------------------------------------------------------------------


async def test_a_future_send_at_schedules_the_message(
    client: httpx.AsyncClient, sender: dict[str, str], redis_client: redis.asyncio.Redis
) -> None:
    when = datetime.now(UTC) + timedelta(days=2)

    message = await sent(client, sender, send_at=when.isoformat())

    assert message["status"] == "scheduled"
    assert datetime.fromisoformat(message["send_at"]) == when
    assert [(event["status"], event["source"]) for event in message["history"]] == [
        ("scheduled", "api")
    ]
    # A job deferred to its time: it starts within arq's poll delay of it, not at a sweep.
    score = await redis_client.zscore("arq:queue", message["id"])
    assert score == round(when.timestamp() * 1000)


async def test_a_send_at_in_another_zone_is_the_same_instant(
    client: httpx.AsyncClient, sender: dict[str, str]
) -> None:
    when = (datetime.now(UTC) + timedelta(hours=5)).replace(microsecond=0)

    tokyo = await sent(client, sender, send_at=when.astimezone(TOKYO).isoformat())
    utc = await sent(client, sender, send_at=when.isoformat().replace("+00:00", "Z"))

    assert tokyo["status"] == utc["status"] == "scheduled"
    assert datetime.fromisoformat(tokyo["send_at"]) == when
    assert datetime.fromisoformat(utc["send_at"]) == when


async def test_a_past_send_at_means_now(
    client: httpx.AsyncClient, sender: dict[str, str], redis_client: redis.asyncio.Redis
) -> None:
    message = await sent(
        client, sender, send_at=(datetime.now(UTC) - timedelta(hours=1)).isoformat()
    )

    assert message["status"] == "queued"
    assert await redis_client.exists(f"arq:job:{message['id']}") == 1


async def test_a_naive_or_too_distant_send_at_is_422(
    client: httpx.AsyncClient, sender: dict[str, str], session: AsyncSession
) -> None:
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    for send_at in [tomorrow.replace(tzinfo=None).isoformat(), "tomorrow"]:
        problem = assert_problem(
            await send(client, sender, send_at=send_at), 422, "validation_error"
        )
        assert [error["field"] for error in problem["errors"]] == ["body.send_at"]

    too_far = (datetime.now(UTC) + timedelta(days=91)).isoformat()
    problem = assert_problem(await send(client, sender, send_at=too_far), 422, "unprocessable")
    assert "90 days" in problem["detail"]
    assert [error["field"] for error in problem["errors"]] == ["body.send_at"]
    assert await count_messages(session) == 0
    almost = (datetime.now(UTC) + timedelta(days=89)).isoformat()
    assert (await sent(client, sender, send_at=almost))["status"] == "scheduled"


# --- GET /api/sms/status/{id} ------------------------------------------------------------------


async def test_the_sender_reads_the_status(
    client: httpx.AsyncClient, sender: dict[str, str]
) -> None:
    message = await sent(client, sender)

    response = await client.get(f"/api/sms/status/{message['id']}", headers=sender)

    assert response.status_code == 200
    assert response.json() == message


async def test_who_else_may_read_a_status(
    client: httpx.AsyncClient,
    sender: dict[str, str],
    manager: dict[str, str],
    make_api_key: MakeKey,
) -> None:
    await put_user(client, manager, "recipient")
    message = await sent(client, sender, user_id="recipient")
    url = f"/api/sms/status/{message['id']}"

    other_sender = await make_api_key(Scope.SMS_SEND, name="other")
    assert_problem(await client.get(url, headers=other_sender), 404, "message_not_found")
    reader = await make_api_key(Scope.SMS_READ, name="reader")
    assert (await client.get(url, headers=reader)).json()["id"] == message["id"]
    assert (await client.get(url, headers=as_user("recipient"))).json()["id"] == message["id"]
    assert_problem(await client.get(url, headers=as_user("stranger")), 404, "message_not_found")
    assert (await client.get(url, headers=as_user("boss", admin=True))).status_code == 200


async def test_unknown_and_malformed_ids(client: httpx.AsyncClient, sender: dict[str, str]) -> None:
    assert_problem(
        await client.get(f"/api/sms/status/{uuid.uuid4()}", headers=sender),
        404,
        "message_not_found",
    )
    problem = assert_problem(
        await client.get("/api/sms/status/not-a-uuid", headers=sender), 422, "validation_error"
    )
    assert problem["errors"][0]["field"] == "path.message_id"


# --- GET /api/sms/messages ---------------------------------------------------------------------


async def set_created_at(session: AsyncSession, message_id: str, when: datetime) -> None:
    await session.execute(
        update(Message).where(Message.id == uuid.UUID(message_id)).values(created_at=when)
    )
    await session.flush()


async def list_ids(client: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> list[str]:
    response = await client.get(LIST, params=params, headers=headers)
    assert response.status_code == 200, response.text
    return [message["id"] for message in response.json()["messages"]]


async def test_messages_are_listed_newest_first_and_filtered(
    client: httpx.AsyncClient,
    sender: dict[str, str],
    manager: dict[str, str],
    session: AsyncSession,
) -> None:
    await put_user(client, manager, "listed")
    base = datetime(2030, 1, 1, tzinfo=UTC)
    queued = await sent(client, sender, reference="r-1")
    scheduled = await sent(
        client, sender, send_at=(datetime.now(UTC) + timedelta(days=1)).isoformat()
    )
    marketing = await sent(client, sender, user_id="listed", category="marketing")
    to_user = await sent(client, sender, user_id="listed", category="ticket", reference="r-1")
    ordered = [queued, scheduled, marketing, to_user]
    for minutes, message in enumerate(ordered):
        await set_created_at(session, message["id"], base + timedelta(minutes=minutes))
    newest_first = [message["id"] for message in reversed(ordered)]

    assert await list_ids(client, sender) == newest_first
    assert await list_ids(client, sender, status="scheduled") == [scheduled["id"]]
    assert await list_ids(client, sender, status="suppressed") == [marketing["id"]]
    assert await list_ids(client, sender, category="ticket") == [to_user["id"]]
    assert await list_ids(client, sender, reference="r-1") == [to_user["id"], queued["id"]]
    assert await list_ids(client, sender, user_id="listed") == [to_user["id"], marketing["id"]]
    assert await list_ids(client, sender, user_id="unknown-user") == []
    after = (base + timedelta(minutes=1)).isoformat()
    before = (base + timedelta(minutes=3)).isoformat()
    assert await list_ids(client, sender, created_after=after, created_before=before) == [
        marketing["id"],
        scheduled["id"],
    ]
    naive = await client.get(LIST, params={"created_after": "2030-01-01T00:00:00"}, headers=sender)
    assert_problem(naive, 422, "validation_error")


async def test_cursor_pagination_walks_every_message_once(
    client: httpx.AsyncClient, sender: dict[str, str], session: AsyncSession
) -> None:
    # Created in one transaction: they share created_at, so the id breaks the ties.
    created = {(await sent(client, sender, body=f"n{n}"))["id"] for n in range(7)}
    distinct = await sent(client, sender, body="older")
    await set_created_at(session, distinct["id"], datetime(2020, 1, 1, tzinfo=UTC))

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: Json = {"limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        response = await client.get(LIST, params=params, headers=sender)
        assert response.status_code == 200, response.text
        page = response.json()
        pages += 1
        seen += [message["id"] for message in page["messages"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 10

    assert pages == 3
    assert len(seen) == len(set(seen)) == 8
    assert set(seen[:7]) == created
    assert seen[-1] == distinct["id"]


async def test_a_bad_cursor_is_422(client: httpx.AsyncClient, sender: dict[str, str]) -> None:
    await sent(client, sender)
    forged = base64.urlsafe_b64encode(f"2020-01-01T00:00:00|{uuid.uuid4()}".encode()).decode()

    for cursor in ["not-a-cursor", "!!!", "eHx5", "MjAyMC0wMS0wMQ==", forged, "x" * 201]:
        response = await client.get(LIST, params={"cursor": cursor}, headers=sender)

        assert response.status_code == 422, cursor
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_users_see_only_their_own_messages(
    client: httpx.AsyncClient, sender: dict[str, str], manager: dict[str, str]
) -> None:
    await put_user(client, manager, "ann")
    await put_user(client, manager, "ben", phone=GB_NUMBER)
    for_ann = await sent(client, sender, user_id="ann")
    for_ben = await sent(client, sender, user_id="ben")
    await sent(client, sender)  # to a bare number

    assert await list_ids(client, as_user("ann")) == [for_ann["id"]]
    assert await list_ids(client, as_user("ann"), user_id="ben") == []
    assert await list_ids(client, as_user("ben")) == [for_ben["id"]]
    assert await list_ids(client, as_user("newcomer")) == []


async def test_services_without_sms_read_see_only_what_they_sent(
    client: httpx.AsyncClient, sender: dict[str, str], make_api_key: MakeKey
) -> None:
    other = await make_api_key(Scope.SMS_SEND, name="other")
    mine = await sent(client, sender)
    theirs = await sent(client, other)
    reader = await make_api_key(Scope.SMS_READ, name="reader")

    assert await list_ids(client, sender) == [mine["id"]]
    assert await list_ids(client, other) == [theirs["id"]]
    assert set(await list_ids(client, reader)) == {mine["id"], theirs["id"]}


# --- POST /api/sms/messages/{id}/cancel --------------------------------------------------------


def cancel_url(message: Json) -> str:
    return f"/api/sms/messages/{message['id']}/cancel"


async def test_queued_and_scheduled_messages_can_be_cancelled_once(
    client: httpx.AsyncClient, sender: dict[str, str], session: AsyncSession
) -> None:
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    for message in (await sent(client, sender), await sent(client, sender, send_at=later)):
        response = await client.post(cancel_url(message), headers=sender)

        assert response.status_code == 200, response.text
        cancelled = response.json()
        assert cancelled["status"] == "cancelled"
        assert cancelled["final_at"] is not None
        assert [(event["status"], event["source"]) for event in cancelled["history"]] == [
            (message["status"], "api"),
            ("cancelled", "api"),
        ]
        row = await session.scalar(
            select(Message.status).where(Message.id == uuid.UUID(message["id"]))
        )
        assert row == "cancelled"

        again = await client.post(cancel_url(message), headers=sender)
        assert_problem(again, 409, "not_cancellable")
        events = await session.scalar(
            select(func.count())
            .select_from(MessageEvent)
            .where(MessageEvent.message_id == uuid.UUID(message["id"]))
        )
        assert events == 2


async def test_a_message_handed_to_twilio_cannot_be_cancelled(
    client: httpx.AsyncClient, sender: dict[str, str], session: AsyncSession
) -> None:
    message = await sent(client, sender)
    await session.execute(
        update(Message)
        .where(Message.id == uuid.UUID(message["id"]))
        .values(twilio_sid="SM" + "a" * 32)
    )
    await session.flush()

    assert_problem(await client.post(cancel_url(message), headers=sender), 409, "not_cancellable")
    status = await client.get(f"/api/sms/status/{message['id']}", headers=sender)
    assert status.json()["status"] == "queued"


async def test_a_message_a_worker_holds_cannot_be_cancelled(
    client: httpx.AsyncClient, sender: dict[str, str], session: AsyncSession
) -> None:
    message = await sent(client, sender)
    await session.execute(
        update(Message)
        .where(Message.id == uuid.UUID(message["id"]))
        .values(status="sending", lease_until=datetime.now(UTC) + timedelta(minutes=1))
    )
    await session.flush()

    assert_problem(await client.post(cancel_url(message), headers=sender), 409, "not_cancellable")


async def test_suppressed_messages_are_not_cancellable(
    client: httpx.AsyncClient, sender: dict[str, str], manager: dict[str, str]
) -> None:
    await put_user(client, manager, "nophone", phone=None, locale="en")
    message = await sent(client, sender, user_id="nophone")

    assert_problem(await client.post(cancel_url(message), headers=sender), 409, "not_cancellable")


async def test_another_service_cannot_cancel(
    client: httpx.AsyncClient, sender: dict[str, str], make_api_key: MakeKey
) -> None:
    message = await sent(client, sender)
    other = await make_api_key(Scope.SMS_SEND, name="other")

    assert_problem(await client.post(cancel_url(message), headers=other), 404, "message_not_found")
    assert_problem(
        await client.post(f"/api/sms/messages/{uuid.uuid4()}/cancel", headers=sender),
        404,
        "message_not_found",
    )
    status = await client.get(f"/api/sms/status/{message['id']}", headers=sender)
    assert status.json()["status"] == "queued"


# --- POST /api/sms/test ------------------------------------------------------------------------


async def test_a_user_sends_a_test_to_their_own_verified_number(
    client: httpx.AsyncClient,
    manager: dict[str, str],
    redis_client: redis.asyncio.Redis,
) -> None:
    await put_user(client, manager, "tester")

    response = await client.post(TEST, headers=as_user("tester"))

    assert response.status_code == 202, response.text
    message = response.json()
    assert message["status"] == "queued"
    assert message["category"] == "test"
    assert message["to"] == MASKED
    assert message["user_id"] == "tester"
    assert message["requested_by"] == "user:tester"
    assert message["body"] == "This is a test message from the SMS service."
    assert await redis_client.exists(f"arq:job:{message['id']}") == 1

    custom = await client.post(TEST, json={"body": "ping"}, headers=as_user("tester"))
    assert custom.status_code == 202
    assert custom.json()["body"] == "ping"


async def test_a_test_needs_a_verified_number_not_opted_out(
    client: httpx.AsyncClient,
    manager: dict[str, str],
    session: AsyncSession,
    cipher: PhoneCipher,
) -> None:
    assert_problem(await client.post(TEST, headers=as_user("fresh")), 422, "no_phone_number")
    # The failed request created nothing, not even the user.
    assert await session.scalar(select(User).where(User.external_id == "fresh")) is None

    await put_user(client, manager, "unverified", verified=False)
    assert_problem(
        await client.post(TEST, headers=as_user("unverified")), 422, "phone_not_verified"
    )

    await put_user(client, manager, "stopped", phone=GB_NUMBER)
    await opt_out(session, cipher.blind_index(GB_NUMBER), source="inbound_sms", keyword="STOP")
    await session.flush()
    assert_problem(await client.post(TEST, headers=as_user("stopped")), 422, "recipient_opted_out")
    assert await count_messages(session) == 0


async def test_only_admins_choose_the_test_number(
    client: httpx.AsyncClient,
    manager: dict[str, str],
    make_api_key: MakeKey,
    session: AsyncSession,
) -> None:
    await put_user(client, manager, "plain")
    refused = await client.post(TEST, json={"to": GB_NUMBER}, headers=as_user("plain"))
    assert_problem(refused, 403, "missing_scope")

    service = await make_api_key(Scope.SMS_SEND, name="service")
    assert_problem(await client.post(TEST, headers=service), 422, "unprocessable")
    assert_problem(
        await client.post(TEST, json={"to": GB_NUMBER}, headers=service), 403, "missing_scope"
    )
    assert await count_messages(session) == 0

    admitted = await client.post(TEST, json={"to": GB_NUMBER}, headers=as_user("op", admin=True))
    assert admitted.status_code == 202, admitted.text
    assert admitted.json()["to"] == "+4477******23"
    assert admitted.json()["category"] == "test"
    admin_key = await make_api_key(Scope.ADMIN, name="admin")
    by_key = await client.post(TEST, json={"to": "+1 415 555 2671"}, headers=admin_key)
    assert by_key.status_code == 202, by_key.text
    assert await count_messages(session) == 2

    bad = await client.post(TEST, json={"to": "+1 900 555 0123"}, headers=admin_key)
    assert_problem(bad, 422, "invalid_phone_number")
    assert await count_messages(session) == 2


async def test_rows_hold_no_plain_numbers(
    client: httpx.AsyncClient, sender: dict[str, str], session: AsyncSession
) -> None:
    await sent(client, sender)

    raw = (await session.execute(text("SELECT messages::text FROM messages"))).scalars().all()

    assert len(raw) == 1
    assert "4155552671" not in raw[0]


@pytest.mark.parametrize(
    ("body", "smart"), [("   ", False), ("\u200b\u200b", True), ("\n\t ", False)]
)
async def test_a_body_without_visible_text_is_refused(
    client: httpx.AsyncClient,
    sender: dict[str, str],
    session: AsyncSession,
    body: str,
    smart: bool,
) -> None:
    response = await client.post(
        "/api/sms/send",
        json={"to": "+14155552671", "body": body, "smart_encoding": smart},
        headers=sender,
    )

    assert response.status_code == 422
    assert response.json()["code"] == "empty_body"
    assert await session.scalar(select(func.count()).select_from(Message)) == 0


@pytest.mark.parametrize(
    "payload",
    [
        {"to": NUMBER, "body": "hi\x00there"},
        {"to": NUMBER, "body": "hi", "reference": "ref\x00"},
        {"to": NUMBER, "body": "hi", "send_at": "0001-01-01T00:00:00+14:00"},
        {"to": NUMBER, "body": "hi", "send_at": "9999-12-31T23:59:59Z"},
    ],
)
async def test_values_the_database_cannot_hold_are_422_not_500(
    client: httpx.AsyncClient,
    sender: dict[str, str],
    session: AsyncSession,
    payload: dict[str, Any],
) -> None:
    response = await client.post(SEND, json=payload, headers=sender)

    assert_problem(response, 422, "validation_error")
    assert await count_messages(session) == 0


@pytest.mark.parametrize(
    "params",
    [
        {"created_after": "0001-01-01T00:00:00+14:00"},
        {"reference": "a\x00b"},
        {"cursor": base64.urlsafe_b64encode(
            f"0001-01-01T00:00:00+14:00|{uuid.uuid4()}".encode()
        ).decode()},
    ],
)  # fmt: skip
async def test_list_filters_the_database_cannot_hold_are_422(
    client: httpx.AsyncClient, sender: dict[str, str], params: dict[str, str]
) -> None:
    response = await client.get("/api/sms/messages", params=params, headers=sender)

    assert response.status_code == 422
