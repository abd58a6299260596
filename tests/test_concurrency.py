"""Concurrent requests on separate connections, committed for real, as production runs them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.auth import api_keys
from app.auth.principal import Scope
from app.core.crypto import PhoneCipher
from app.core.database import create_sessionmaker, transaction
from app.core.settings import Settings
from app.delivery_status import repository as delivery_repository
from app.delivery_status.repository import Locked
from app.delivery_status.service import StatusReport, apply_reports
from app.main import create_app
from app.messages.models import Message
from tests.conftest import as_user, bearer
from tests.sending_support import add_message, new_sid

PREFIX = "conc-"


@pytest.fixture
async def live(settings: Settings, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its own connection pool: each request its own connection and commit."""
    async with transaction(create_sessionmaker(engine)) as session:
        created = await api_keys.create_key(session, f"{PREFIX}service", [Scope.USERS_WRITE])
    app = create_app(settings)
    try:
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://live", headers=bearer(created.secret)
            ) as client:
                yield client
    finally:
        async with engine.begin() as connection:
            await connection.execute(
                text("DELETE FROM topic_subscriptions WHERE topic LIKE 'conc-%'")
            )
            await connection.execute(text("DELETE FROM users WHERE external_id LIKE 'conc-%'"))
            await connection.execute(text("DELETE FROM api_keys WHERE name LIKE 'conc-%'"))


async def test_adds_creating_the_same_users_in_opposite_orders_do_not_deadlock(
    live: httpx.AsyncClient,
) -> None:
    for round_ in range(3):
        ids = [f"{PREFIX}{round_}-{n:03}" for n in range(200)]
        url = f"/api/topics/{PREFIX}team-{round_}/subscribers"

        responses = await asyncio.gather(
            live.post(url, json={"user_ids": ids}),
            live.post(url, json={"user_ids": ids[::-1]}),
        )

        assert [response.status_code for response in responses] == [200, 200]
        assert sorted(response.json()["added"] for response in responses) == [0, 200]


async def test_concurrent_replacements_leave_one_of_the_lists(live: httpx.AsyncClient) -> None:
    url = f"/api/topics/{PREFIX}replaced/subscribers"
    first = [f"{PREFIX}a-{n:02}" for n in range(50)]
    second = [f"{PREFIX}b-{n:02}" for n in range(50)]
    for _ in range(3):
        await live.put(url, json={"user_ids": []})

        responses = await asyncio.gather(
            live.put(url, json={"user_ids": first}), live.put(url, json={"user_ids": second})
        )

        assert [response.status_code for response in responses] == [200, 200]
        page = await live.get(url, params={"limit": 1000})
        members = [subscriber["user_id"] for subscriber in page.json()["subscribers"]]
        assert members in (first, second)


async def test_the_first_requests_of_a_new_user_create_one_user(live: httpx.AsyncClient) -> None:
    user = f"{PREFIX}newcomer"

    responses = await asyncio.gather(
        *(live.get("/api/user/profile", headers=as_user(user)) for _ in range(8))
    )

    assert {response.status_code for response in responses} == {200}
    assert len({response.json()["created_at"] for response in responses}) == 1


async def test_updates_racing_an_erasure_end_in_200_or_404_never_500(
    live: httpx.AsyncClient,
) -> None:
    for round_ in range(5):
        user = f"{PREFIX}erased-{round_}"
        await live.put(f"/api/users/{user}", json={"phone_number": "+14155552671"})

        responses = await asyncio.gather(
            live.delete(f"/api/users/{user}"),
            live.put(f"/api/users/{user}/preferences", json={"marketing": True}),
            live.put(f"/api/users/{user}", json={"locale": "fr"}),
        )

        assert responses[0].status_code == 204
        assert responses[1].status_code in (200, 404)
        assert responses[2].status_code in (200, 201)


async def test_callback_batches_sharing_messages_in_opposite_orders_take_turns(
    engine: AsyncEngine, cipher: PhoneCipher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two API processes' batches, each with other statuses of the same messages, each held
    after its first statement as long as the other could reach its own. Locked at once and in
    one order, the messages make the second wait for the first's commit and decide on what it
    committed; without, both would decide on the same old statuses, and one would move half of
    them back (or the two deadlock)."""
    sessionmaker = create_sessionmaker(engine)
    sent = [
        await add_message(
            sessionmaker, cipher, body=f"{PREFIX}cb", status="sending", twilio_sid=new_sid()
        )
        for _ in range(40)
    ]
    async with sessionmaker() as session:
        rows = [await session.get_one(Message, message_id) for message_id in sent]
    sids = [row.twilio_sid or "" for row in rows]
    first, second = sids[:20], sids[20:]
    one = [StatusReport(sid, "sent", None) for sid in first] + [
        StatusReport(sid, "delivered", None) for sid in second
    ]
    other = [StatusReport(sid, "sent", None) for sid in second] + [
        StatusReport(sid, "delivered", None) for sid in first
    ]
    meet = asyncio.Barrier(2)
    lock_messages_of = delivery_repository.lock_messages_of

    async def then_wait_for_the_other(session: AsyncSession, sids: Sequence[str]) -> list[Locked]:
        locked = await lock_messages_of(session, sids)
        with contextlib.suppress(TimeoutError, asyncio.BrokenBarrierError):
            await asyncio.wait_for(meet.wait(), 1.5)
        return locked

    monkeypatch.setattr(delivery_repository, "lock_messages_of", then_wait_for_the_other)

    async def apply(reports: list[StatusReport]) -> set[str]:
        async with transaction(sessionmaker) as session:
            return await apply_reports(session, reports)

    try:
        assert list(await asyncio.gather(apply(one), apply(other))) == [set(), set()]
        async with sessionmaker() as session:
            statuses = await session.scalars(select(Message.status).where(Message.id.in_(sent)))
            assert set(statuses) == {"delivered"}
    finally:
        async with engine.begin() as connection:
            await connection.execute(
                text("DELETE FROM messages WHERE body = :body"), {"body": f"{PREFIX}cb"}
            )
