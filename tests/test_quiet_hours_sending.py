"""Quiet hours when sending (SPEC §6): a marketing message that would land between 21:00 and
08:00 in the recipient's zone waits for the morning, whether it is created at night or reaches
the front of the queue at night; other messages go at once. The clock is shifted, not slept on."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import httpx
import pytest
import respx
import time_machine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.principal import Scope
from app.core.database import transaction
from app.core.settings import Settings
from app.outbox import repository as outbox_repository
from app.outbox.service import Outbox, Outcome
from tests.sending_support import created, event_rows, load, new_sid, twilio_base

MakeKey = Callable[..., Awaitable[dict[str, str]]]

PARIS = ZoneInfo("Europe/Paris")
PHONE = "+33612345678"
USER = "paris-customer"
# A winter Wednesday (Paris is UTC+1).
AFTERNOON = datetime(2025, 1, 15, 14, 0, tzinfo=PARIS)
LATE_EVENING = datetime(2025, 1, 15, 23, 0, tzinfo=PARIS)
NEXT_MORNING = datetime(2025, 1, 16, 8, 0, tzinfo=PARIS)
TICK = timedelta(seconds=1)
OFFER = "Winter offer: 20% off every haircut this week. Reply STOP to opt out."


@pytest.fixture
def api(settings: Settings) -> Iterator[respx.MockRouter]:
    """Twilio, as respx: any request without a route fails the test."""
    with respx.mock(base_url=twilio_base(settings), assert_all_called=False) as router:
        yield router


@pytest.fixture
def create(api: respx.MockRouter) -> respx.Route:
    return api.post("/Messages.json").mock(side_effect=lambda _: created(new_sid()))


@pytest.fixture
async def service(make_api_key: MakeKey) -> dict[str, str]:
    return await make_api_key(Scope.SMS_SEND, Scope.USERS_WRITE, name="salon")


@pytest.fixture
async def customer(client: httpx.AsyncClient, service: dict[str, str]) -> str:
    """In Paris, with marketing messages on (they are off by default)."""
    response = await client.put(
        f"/api/users/{USER}",
        json={
            "phone_number": PHONE,
            "phone_verified": True,
            "locale": "fr",
            "time_zone": "Europe/Paris",
        },
        headers=service,
    )
    assert response.status_code == 201, response.text
    opted_in = await client.put(
        f"/api/users/{USER}/preferences", json={"marketing": True}, headers=service
    )
    assert opted_in.status_code == 200, opted_in.text
    return USER


async def send_sms(
    client: httpx.AsyncClient, headers: dict[str, str], at: datetime, **fields: str
) -> httpx.Response:
    with time_machine.travel(at, tick=False):
        return await client.post("/api/sms/send", json={"user_id": USER, **fields}, headers=headers)


async def attempt(outbox: Outbox, message_id: uuid.UUID, at: datetime) -> Outcome:
    with time_machine.travel(at, tick=False):
        return (await outbox.send(message_id)).outcome


async def release_at(
    sessionmaker: async_sessionmaker[AsyncSession], moment: datetime
) -> list[uuid.UUID]:
    """What the sweeper releases when its clock reads `moment`."""
    with time_machine.travel(moment, tick=False):
        async with transaction(sessionmaker) as session:
            return await outbox_repository.release_scheduled(
                session, now=datetime.now(UTC), limit=100
            )


def sent(route: respx.Route) -> tuple[str, str]:
    form = dict(parse_qsl(route.calls.last.request.content.decode()))
    return form["To"], form["Body"]


async def test_a_marketing_message_reaching_the_queue_front_at_night_waits_for_the_morning(
    client: httpx.AsyncClient,
    service: dict[str, str],
    customer: str,
    outbox: Outbox,
    create: respx.Route,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    # Made in the afternoon (it is valid for MESSAGE_VALIDITY_SECONDS, at most 10 hours, so
    # still valid at 23:00), it only reaches the front of a long queue late in the evening.
    response = await send_sms(client, service, AFTERNOON, body=OFFER, category="marketing")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    message_id = uuid.UUID(response.json()["id"])

    assert await attempt(outbox, message_id, LATE_EVENING) is Outcome.HELD

    assert not create.called
    held = await load(sessionmaker, message_id)
    assert held.status == "scheduled"
    assert held.send_at == held.next_attempt_at == NEXT_MORNING
    assert held.expires_at == NEXT_MORNING + timedelta(seconds=settings.message_validity_seconds)
    assert held.attempts == 0
    assert held.lease_until is None
    assert held.twilio_sid is None
    last = (await event_rows(sessionmaker, message_id))[-1]
    assert (last.status, last.source) == ("scheduled", "worker")
    assert "quiet hours" in (last.detail or "")
    # Nothing else may send it in the night.
    assert await attempt(outbox, message_id, LATE_EVENING + TICK) is Outcome.NOT_CLAIMED
    assert await release_at(sessionmaker, NEXT_MORNING - TICK) == []

    assert await release_at(sessionmaker, NEXT_MORNING + TICK) == [message_id]
    assert await attempt(outbox, message_id, NEXT_MORNING + TICK) is Outcome.ACCEPTED

    assert create.call_count == 1
    assert sent(create) == (PHONE, OFFER)
    message = await load(sessionmaker, message_id)
    assert message.twilio_sid is not None
    assert message.attempts == 1


async def test_a_transactional_message_at_night_is_sent_at_once(
    client: httpx.AsyncClient,
    service: dict[str, str],
    customer: str,
    outbox: Outbox,
    create: respx.Route,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    body = "Your order has shipped."
    response = await send_sms(client, service, LATE_EVENING, body=body)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    message_id = uuid.UUID(response.json()["id"])

    assert await attempt(outbox, message_id, LATE_EVENING) is Outcome.ACCEPTED

    assert create.call_count == 1
    assert sent(create) == (PHONE, body)
    message = await load(sessionmaker, message_id)
    assert message.send_at is None
    assert message.twilio_sid is not None


async def test_a_marketing_message_created_at_night_is_scheduled_for_the_morning(
    client: httpx.AsyncClient,
    service: dict[str, str],
    customer: str,
    outbox: Outbox,
    create: respx.Route,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    response = await send_sms(client, service, LATE_EVENING, body=OFFER, category="marketing")

    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["status"] == "scheduled"
    assert datetime.fromisoformat(answer["send_at"]) == NEXT_MORNING
    message_id = uuid.UUID(answer["id"])
    first = (await event_rows(sessionmaker, message_id))[0]
    assert (first.status, first.source) == ("scheduled", "api")
    assert "quiet hours" in (first.detail or "")
    assert await attempt(outbox, message_id, LATE_EVENING) is Outcome.NOT_CLAIMED
    assert await release_at(sessionmaker, NEXT_MORNING - TICK) == []

    assert await release_at(sessionmaker, NEXT_MORNING + TICK) == [message_id]
    assert await attempt(outbox, message_id, NEXT_MORNING + TICK) is Outcome.ACCEPTED
    assert sent(create) == (PHONE, OFFER)
