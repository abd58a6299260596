"""The audit trail of a message: who asked for it (an API key, by name, or a user) and every
change of its status, in order, as the API, the worker and Twilio's callbacks made them."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.principal import Scope
from app.core.settings import Settings
from app.outbox.service import Outbox, Outcome
from tests.conftest import as_user
from tests.sending_support import TO, created, make_due, new_sid, signed, twilio_base

MakeKey = Callable[..., Awaitable[dict[str, str]]]
Json = dict[str, Any]

WEBHOOK = "/api/sms/webhook"


def events_path(message_id: str | uuid.UUID) -> str:
    return f"/api/sms/messages/{message_id}/events"


@pytest.fixture
def api(settings: Settings) -> Iterator[respx.MockRouter]:
    """Twilio, as respx: any request without a route fails the test."""
    with respx.mock(base_url=twilio_base(settings), assert_all_called=False) as router:
        yield router


@pytest.fixture
async def sender(make_api_key: MakeKey) -> dict[str, str]:
    return await make_api_key(Scope.SMS_SEND, Scope.USERS_WRITE, name="booking-service")


async def callback(
    client: httpx.AsyncClient, settings: Settings, sid: str, status: str, **extra: str
) -> None:
    params = {
        "MessageSid": sid,
        "MessageStatus": status,
        "AccountSid": "AC" + "5a" * 16,
        "From": "+15005550006",
        "To": TO,
        **extra,
    }
    response = await client.post(WEBHOOK, data=params, headers=signed(settings, WEBHOOK, params))
    assert response.status_code == 204, response.text


def trail(answer: Json) -> list[tuple[Any, ...]]:
    return [
        (
            event["status"],
            event["source"],
            event["twilio_status"],
            event["error_code"],
            event["error_meaning"],
            event["detail"],
        )
        for event in answer["events"]
    ]


async def key_id_of(session: AsyncSession, name: str) -> str:
    found = await session.scalar(text("SELECT id::text FROM api_keys WHERE name = :n"), {"n": name})
    assert found is not None
    return str(found)


async def test_a_sent_message_shows_who_asked_and_each_status_in_order(
    client: httpx.AsyncClient,
    sender: dict[str, str],
    outbox: Outbox,
    api: respx.MockRouter,
    settings: Settings,
    session: AsyncSession,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    sent = await client.post("/api/sms/send", json={"to": TO, "body": "Hi"}, headers=sender)
    assert sent.status_code == 202, sent.text
    message_id = sent.json()["id"]
    sid = new_sid()
    api.post("/Messages.json").mock(return_value=created(sid, status="queued"))
    # Due by the database's clock too (its now() is the test transaction's start).
    await make_due(sessionmaker, uuid.UUID(message_id))
    assert (await outbox.send(uuid.UUID(message_id))).outcome is Outcome.ACCEPTED
    await callback(client, settings, sid, "sent")
    await callback(client, settings, sid, "undelivered", ErrorCode="30003")

    response = await client.get(events_path(message_id), headers=sender)

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["message_id"] == message_id
    assert answer["requested_by"] == f"api_key:{await key_id_of(session, 'booking-service')}"
    assert answer["api_key_name"] == "booking-service"
    assert trail(answer) == [
        ("queued", "api", None, None, None, None),
        ("sending", "worker", None, None, None, None),
        ("sending", "worker", "queued", None, None, None),
        ("sent", "callback", "sent", None, None, None),
        ("undelivered", "callback", "undelivered", 30003, "unreachable handset", None),
    ]
    times = [event["at"] for event in answer["events"]]
    assert times == sorted(times)


async def test_a_message_a_user_asked_for_names_the_user(
    client: httpx.AsyncClient, sender: dict[str, str]
) -> None:
    await client.put(
        "/api/users/uma",
        json={"phone_number": TO, "phone_verified": True},
        headers=sender,
    )
    sent = await client.post("/api/sms/test", headers=as_user("uma"))
    assert sent.status_code == 202, sent.text

    response = await client.get(events_path(sent.json()["id"]), headers=as_user("uma"))

    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["requested_by"], answer["api_key_name"]) == ("user:uma", None)
    assert trail(answer) == [("queued", "api", None, None, None, None)]


async def test_a_revoked_key_keeps_its_name_in_the_trail(
    client: httpx.AsyncClient, make_api_key: MakeKey, session: AsyncSession
) -> None:
    gone = await make_api_key(Scope.SMS_SEND, name="old-billing")
    reader = await make_api_key(Scope.SMS_READ, name="auditor")
    sent = await client.post("/api/sms/send", json={"to": TO, "body": "Paid"}, headers=gone)
    await session.execute(text("UPDATE api_keys SET revoked_at = now() WHERE name = 'old-billing'"))

    response = await client.get(events_path(sent.json()["id"]), headers=reader)

    assert response.status_code == 200, response.text
    assert response.json()["api_key_name"] == "old-billing"


async def test_the_trail_is_visible_to_whom_the_message_is(
    client: httpx.AsyncClient, sender: dict[str, str], make_api_key: MakeKey
) -> None:
    await client.put(
        "/api/users/val", json={"phone_number": TO, "phone_verified": True}, headers=sender
    )
    sent = await client.post("/api/sms/send", json={"user_id": "val", "body": "Hi"}, headers=sender)
    path = events_path(sent.json()["id"])
    another_sender = await make_api_key(Scope.SMS_SEND, name="another-service")
    reader = await make_api_key(Scope.SMS_READ, name="auditor")

    allowed = {
        "the sender": await client.get(path, headers=sender),
        "the recipient": await client.get(path, headers=as_user("val")),
        "sms:read": await client.get(path, headers=reader),
        "an admin": await client.get(path, headers=as_user("root", admin=True)),
    }
    refused = {
        "another service": await client.get(path, headers=another_sender),
        "another user": await client.get(path, headers=as_user("wes")),
    }
    unknown = await client.get(events_path(uuid.uuid4()), headers=reader)
    anonymous = await client.get(path)

    assert {who: r.status_code for who, r in allowed.items()} == dict.fromkeys(allowed, 200)
    for response in (*refused.values(), unknown):
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "message_not_found"
    # Someone else's message and none at all look the same.
    assert refused["another service"].json()["detail"] == f"no message {sent.json()['id']}"
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "missing_credentials"


async def test_after_the_user_is_erased_the_trail_stays_naming_nobody(
    client: httpx.AsyncClient, sender: dict[str, str], make_api_key: MakeKey
) -> None:
    await client.put(
        "/api/users/xen", json={"phone_number": TO, "phone_verified": True}, headers=sender
    )
    own = await client.post("/api/sms/test", headers=as_user("xen"))
    reader = await make_api_key(Scope.SMS_READ, name="auditor")

    erased = await client.delete("/api/users/xen", headers=sender)
    response = await client.get(events_path(own.json()["id"]), headers=reader)

    assert erased.status_code == 204
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["requested_by"], answer["api_key_name"]) == ("erased-user", None)
    assert trail(answer) == [
        ("queued", "api", None, None, None, None),
        ("cancelled", "api", None, None, None, "user erased"),
    ]
