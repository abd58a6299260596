"""Idempotency-Key on sending requests: a retry is answered, never sent twice."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis.asyncio
from asgi_lifespan import LifespanManager
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.auth import api_keys
from app.auth.models import ApiKey
from app.auth.principal import Scope
from app.core.database import create_sessionmaker, transaction
from app.core.settings import Settings
from app.idempotency.models import IdempotencyKey
from app.main import create_app
from app.messages.models import Message
from app.messages.schemas import SendRequest
from tests.conftest import as_user, bearer

MakeKey = Callable[..., Awaitable[dict[str, str]]]
Json = dict[str, Any]

SEND = "/api/sms/send"
TEST = "/api/sms/test"
NUMBER = "+14155552671"
BODY: Json = {"to": NUMBER, "body": "Your booking is confirmed."}


def keyed(headers: dict[str, str], key: str) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


async def principal_of(session: AsyncSession, headers: dict[str, str]) -> str:
    secret = headers["Authorization"].removeprefix("Bearer ")
    found = await session.scalar(
        select(ApiKey.id).where(ApiKey.key_hash == api_keys.hash_key(secret))
    )
    assert found is not None
    return f"api_key:{found}"


async def count(session: AsyncSession, model: type[Message] | type[IdempotencyKey]) -> int:
    return int(await session.scalar(select(func.count()).select_from(model)) or 0)


def assert_problem(response: httpx.Response, status: int, code: str) -> Json:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: Json = response.json()
    assert problem["code"] == code
    return problem


@pytest.fixture
async def sender(make_api_key: MakeKey) -> dict[str, str]:
    return await make_api_key(Scope.SMS_SEND, name="booking-service")


# --- one request at a time ----------------------------------------------------------------------


async def test_the_same_key_and_body_replay_the_first_answer(
    client: httpx.AsyncClient,
    sender: dict[str, str],
    session: AsyncSession,
    redis_client: redis.asyncio.Redis,
) -> None:
    first = await client.post(SEND, json=BODY, headers=keyed(sender, "order-1"))
    assert first.status_code == 202, first.text
    assert "Idempotent-Replayed" not in first.headers

    again = await client.post(SEND, json=BODY, headers=keyed(sender, "order-1"))

    assert again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert await count(session, Message) == 1
    row = await session.scalar(select(IdempotencyKey).where(IdempotencyKey.key == "order-1"))
    assert row is not None
    assert (row.status_code, row.locked_until) == (202, None)
    assert row.principal == await principal_of(session, sender)
    assert row.response_body is not None
    assert row.response_body["id"] == first.json()["id"]
    assert await redis_client.exists(f"arq:job:{first.json()['id']}") == 1


async def test_the_same_key_with_another_body_is_refused(
    client: httpx.AsyncClient, sender: dict[str, str], session: AsyncSession
) -> None:
    first = await client.post(SEND, json=BODY, headers=keyed(sender, "k"))
    assert first.status_code == 202

    for other in (
        {**BODY, "body": "Something else"},
        {**BODY, "reference": "r"},
        {"to": "+447700900123", "body": BODY["body"]},
    ):
        refused = await client.post(SEND, json=other, headers=keyed(sender, "k"))
        assert_problem(refused, 422, "idempotency_key_reused")
    # The same key on the other sending route is another request too.
    assert_problem(
        await client.post(TEST, json={"to": NUMBER}, headers=keyed(sender, "k")),
        422,
        "idempotency_key_reused",
    )
    assert await count(session, Message) == 1
    replay = await client.post(SEND, json=BODY, headers=keyed(sender, "k"))
    assert replay.json()["id"] == first.json()["id"]


async def test_the_same_body_written_differently_is_the_same_request(
    client: httpx.AsyncClient, sender: dict[str, str], session: AsyncSession
) -> None:
    first = await client.post(SEND, json=BODY, headers=keyed(sender, "k"))
    reordered = {"body": BODY["body"], "category": "transactional", "to": NUMBER}

    again = await client.post(SEND, json=reordered, headers=keyed(sender, "k"))

    assert again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"]
    assert await count(session, Message) == 1


async def test_keys_belong_to_their_holder(
    client: httpx.AsyncClient, sender: dict[str, str], make_api_key: MakeKey, session: AsyncSession
) -> None:
    other = await make_api_key(Scope.SMS_SEND, name="payments")
    admin = as_user("root", admin=True)

    answers = [
        await client.post(SEND, json=BODY, headers=keyed(headers, "shared-key"))
        for headers in (sender, other, admin)
    ]

    assert [answer.status_code for answer in answers] == [202, 202, 202]
    assert not any("Idempotent-Replayed" in answer.headers for answer in answers)
    assert len({answer.json()["id"] for answer in answers}) == 3
    assert await count(session, Message) == 3
    assert await count(session, IdempotencyKey) == 3


async def test_a_failed_request_frees_its_key(
    client: httpx.AsyncClient, sender: dict[str, str], session: AsyncSession
) -> None:
    too_long = {**BODY, "body": "a" * 1601}
    failed = await client.post(SEND, json=too_long, headers=keyed(sender, "retry-me"))
    assert_problem(failed, 422, "body_too_long")
    assert await count(session, IdempotencyKey) == 0
    assert await count(session, Message) == 0
    # The same failing request again is run again (and fails again), not replayed.
    failed_again = await client.post(SEND, json=too_long, headers=keyed(sender, "retry-me"))
    assert_problem(failed_again, 422, "body_too_long")
    assert "Idempotent-Replayed" not in failed_again.headers

    fixed = await client.post(SEND, json=BODY, headers=keyed(sender, "retry-me"))

    assert fixed.status_code == 202, fixed.text
    assert await count(session, Message) == 1
    assert await count(session, IdempotencyKey) == 1


async def test_errors_from_the_service_all_free_the_key(
    client: httpx.AsyncClient, sender: dict[str, str], session: AsyncSession
) -> None:
    cases = [
        ({"user_id": "nobody", "body": "hi"}, 404, "user_not_found"),
        ({"to": "+1 900 555 0123", "body": "hi"}, 422, "invalid_phone_number"),
    ]
    for payload, status, code in cases:
        assert_problem(
            await client.post(SEND, json=payload, headers=keyed(sender, "k")), status, code
        )
        assert await count(session, IdempotencyKey) == 0, code
    # A user's test without a number: the same, on /api/sms/test.
    refused = await client.post(TEST, headers=keyed(as_user("no-phone"), "k"))
    assert_problem(refused, 422, "no_phone_number")
    assert await count(session, IdempotencyKey) == 0


async def test_invalid_keys_are_refused(
    client: httpx.AsyncClient, sender: dict[str, str], session: AsyncSession
) -> None:
    for key in ["x" * 256, "has space", "tab\there", ""]:
        response = await client.post(SEND, json=BODY, headers=keyed(sender, key))

        problem = assert_problem(response, 422, "validation_error")
        assert [error["field"] for error in problem["errors"]] == ["header.Idempotency-Key"]
    assert await count(session, Message) == 0
    assert await count(session, IdempotencyKey) == 0
    longest = await client.post(SEND, json=BODY, headers=keyed(sender, "x" * 255))
    assert longest.status_code == 202, longest.text


async def test_without_a_key_every_post_sends(
    client: httpx.AsyncClient, sender: dict[str, str], session: AsyncSession
) -> None:
    answers = [await client.post(SEND, json=BODY, headers=sender) for _ in range(3)]

    assert [answer.status_code for answer in answers] == [202, 202, 202]
    assert len({answer.json()["id"] for answer in answers}) == 3
    assert await count(session, Message) == 3
    assert await count(session, IdempotencyKey) == 0


async def test_a_self_test_is_replayed_too(
    client: httpx.AsyncClient, make_api_key: MakeKey, session: AsyncSession
) -> None:
    manager = await make_api_key(Scope.USERS_WRITE)
    await client.put(
        "/api/users/tester",
        json={"phone_number": NUMBER, "phone_verified": True},
        headers=manager,
    )
    headers = keyed(as_user("tester"), "self-test")

    first = await client.post(TEST, headers=headers)
    again = await client.post(TEST, headers=headers)

    assert first.status_code == again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert await count(session, Message) == 1


async def test_an_expired_key_is_free_for_another_request(
    client: httpx.AsyncClient, sender: dict[str, str], session: AsyncSession
) -> None:
    first = await client.post(SEND, json=BODY, headers=keyed(sender, "old"))
    assert first.status_code == 202
    await session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.key == "old")
        .values(expires_at=datetime.now(UTC) - timedelta(hours=1))
    )
    await session.flush()
    other = {**BODY, "body": "A new day, a new message."}

    response = await client.post(SEND, json=other, headers=keyed(sender, "old"))

    assert response.status_code == 202, response.text
    assert "Idempotent-Replayed" not in response.headers
    assert response.json()["id"] != first.json()["id"]
    assert response.json()["body"] == other["body"]
    assert await count(session, Message) == 2
    replay = await client.post(SEND, json=other, headers=keyed(sender, "old"))
    assert replay.json()["id"] == response.json()["id"]
    assert_problem(
        await client.post(SEND, json=BODY, headers=keyed(sender, "old")),
        422,
        "idempotency_key_reused",
    )


def fingerprint(operation: str, payload: Json) -> bytes:
    """As the service fingerprints a request (operation and parsed body)."""
    parsed = SendRequest.model_validate(payload).model_dump_json()
    return hashlib.sha256(f"{operation}\n{parsed}".encode()).digest()


async def _plant(
    session: AsyncSession,
    principal: str,
    key: str,
    *,
    locked_until: datetime,
    request_hash: bytes | None = None,
) -> None:
    """A key as a request that is still running (or died) leaves it: no answer yet."""
    await session.execute(
        insert(IdempotencyKey).values(
            principal=principal,
            key=key,
            request_hash=request_hash or fingerprint("send", BODY),
            status_code=None,
            response_body=None,
            locked_until=locked_until,
            expires_at=datetime.now(UTC) + timedelta(hours=23),
        )
    )
    await session.flush()


async def test_a_key_still_in_flight_is_409_with_retry_after(
    client: httpx.AsyncClient, sender: dict[str, str], session: AsyncSession
) -> None:
    await _plant(
        session,
        await principal_of(session, sender),
        "running",
        locked_until=datetime.now(UTC) + timedelta(minutes=5),
    )

    response = await client.post(SEND, json=BODY, headers=keyed(sender, "running"))

    assert_problem(response, 409, "idempotency_key_in_flight")
    assert int(response.headers["Retry-After"]) >= 1
    # Another body than the running request's: that is the clearer answer.
    other = await client.post(
        SEND, json={**BODY, "body": "other"}, headers=keyed(sender, "running")
    )
    assert_problem(other, 422, "idempotency_key_reused")
    assert await count(session, Message) == 0
    # Nor did the refused requests free the running request's key.
    assert await count(session, IdempotencyKey) == 1


async def test_an_abandoned_key_whose_lease_ran_out_is_taken_over(
    client: httpx.AsyncClient, sender: dict[str, str], session: AsyncSession
) -> None:
    principal = await principal_of(session, sender)
    await _plant(
        session, principal, "crashed", locked_until=datetime.now(UTC) - timedelta(minutes=5)
    )

    response = await client.post(SEND, json=BODY, headers=keyed(sender, "crashed"))

    assert response.status_code == 202, response.text
    assert "Idempotent-Replayed" not in response.headers
    assert await count(session, Message) == 1
    row = await session.scalar(
        select(IdempotencyKey)
        .where(IdempotencyKey.key == "crashed")
        .execution_options(populate_existing=True)
    )
    assert row is not None
    assert row.status_code == 202
    assert row.response_body is not None
    assert row.response_body["id"] == response.json()["id"]
    replay = await client.post(SEND, json=BODY, headers=keyed(sender, "crashed"))
    assert replay.headers["Idempotent-Replayed"] == "true"


# --- real concurrency: each request its own connection and commit ------------------------------

PREFIX = "idem-live-"


@dataclass
class Live:
    client: httpx.AsyncClient
    engine: AsyncEngine
    principal: str

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.engine.connect() as connection:
            return (await connection.execute(text(sql), params)).scalar()


@pytest.fixture
async def live(
    settings: Settings, engine: AsyncEngine, redis_client: redis.asyncio.Redis
) -> AsyncIterator[Live]:
    """The app with its own connection pool, its data committed, and removed afterwards."""
    async with transaction(create_sessionmaker(engine)) as session:
        created = await api_keys.create_key(
            session, f"{PREFIX}{uuid.uuid4().hex[:8]}", [Scope.SMS_SEND]
        )
    principal = f"api_key:{created.key.id}"
    app = create_app(settings)
    try:
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://live", headers=bearer(created.secret)
            ) as client:
                yield Live(client, engine, principal)
    finally:
        async with engine.begin() as connection:
            params = {"principal": principal}
            await connection.execute(
                text("DELETE FROM messages WHERE requested_by = :principal"), params
            )
            await connection.execute(
                text("DELETE FROM idempotency_keys WHERE principal = :principal"), params
            )
            await connection.execute(
                text("DELETE FROM api_keys WHERE id = :id"), {"id": created.key.id}
            )


async def test_concurrent_retries_with_one_key_send_one_message(live: Live) -> None:
    headers = {"Idempotency-Key": "concurrent-1"}

    answers = await asyncio.gather(
        *(live.client.post(SEND, json=BODY, headers=headers) for _ in range(10))
    )

    statuses = sorted(answer.status_code for answer in answers)
    assert set(statuses) <= {202, 409}, [answer.text for answer in answers]
    accepted = [answer for answer in answers if answer.status_code == 202]
    assert accepted
    assert len({answer.json()["id"] for answer in accepted}) == 1
    assert sum("Idempotent-Replayed" not in answer.headers for answer in accepted) == 1
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["code"] == "idempotency_key_in_flight"
            assert int(answer.headers["Retry-After"]) >= 1
    messages = await live.scalar(
        "SELECT count(*) FROM messages WHERE requested_by = :p", p=live.principal
    )
    assert messages == 1

    retry = await live.client.post(SEND, json=BODY, headers=headers)

    assert retry.status_code == 202
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json() == accepted[0].json()


async def test_concurrent_requests_with_other_bodies_are_refused_not_sent(live: Live) -> None:
    headers = {"Idempotency-Key": "concurrent-2"}
    bodies = [{**BODY, "body": f"variant {n}"} for n in range(6)]

    answers = await asyncio.gather(
        *(live.client.post(SEND, json=body, headers=headers) for body in bodies)
    )

    codes = sorted(
        "accepted" if answer.status_code == 202 else answer.json()["code"] for answer in answers
    )
    assert codes == ["accepted"] + ["idempotency_key_reused"] * 5
    messages = await live.scalar(
        "SELECT count(*) FROM messages WHERE requested_by = :p", p=live.principal
    )
    assert messages == 1


async def test_concurrent_distinct_keys_each_send(live: Live) -> None:
    answers = await asyncio.gather(
        *(
            live.client.post(SEND, json=BODY, headers={"Idempotency-Key": f"distinct-{n}"})
            for n in range(5)
        )
    )

    assert [answer.status_code for answer in answers] == [202] * 5
    assert len({answer.json()["id"] for answer in answers}) == 5
    keys = await live.scalar(
        "SELECT count(*) FROM idempotency_keys WHERE principal = :p AND status_code = 202",
        p=live.principal,
    )
    assert keys == 5


async def test_concurrent_failing_requests_leave_the_key_free(live: Live) -> None:
    headers = {"Idempotency-Key": "concurrent-3"}
    too_long = {**BODY, "body": "a" * 1601}

    answers = await asyncio.gather(
        *(live.client.post(SEND, json=too_long, headers=headers) for _ in range(6))
    )

    codes = {answer.json()["code"] for answer in answers}
    assert "body_too_long" in codes
    assert codes <= {"body_too_long", "idempotency_key_in_flight"}
    keys = await live.scalar(
        "SELECT count(*) FROM idempotency_keys WHERE principal = :p", p=live.principal
    )
    assert keys == 0
    fixed = await live.client.post(SEND, json=BODY, headers=headers)
    assert fixed.status_code == 202, fixed.text
    assert "Idempotent-Replayed" not in fixed.headers
