"""One-time codes: 2FA and phone verification, from the request through the outbox (respx
standing in for Twilio) to the check, with the limits that stand against brute force and SMS
pumping. The code is read where the user would read it: in the body Twilio was asked to send."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import redis.asyncio
import respx
from arq.connections import ArqRedis
from asgi_lifespan import LifespanManager
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.auth.principal import Scope
from app.codes.models import Verification
from app.core.crypto import PhoneCipher
from app.core.database import create_sessionmaker, transaction
from app.core.deps import get_sessionmaker
from app.core.redis import create_redis
from app.core.settings import Settings
from app.main import create_app
from app.messages.models import Message
from app.optouts import service as optouts
from app.outbox.service import Attempt, Outbox, Outcome
from app.twilio.client import TwilioClient
from app.users import service as users_service
from app.users.models import User
from tests.conftest import as_user
from tests.sending_support import created, load, make_due, new_sid, page, resource, twilio_base

MakeKey = Callable[..., Awaitable[dict[str, str]]]
Json = dict[str, Any]

SEND_2FA = "/api/sms/send-2fa"
VERIFY_2FA = "/api/sms/verify-2fa"
START_VERIFICATION = "/api/user/phone/verification"
CHECK_VERIFICATION = "/api/user/phone/verification/check"

NUMBER = "+14155552671"
OTHER_NUMBER = "+14155552672"
FR_NUMBER = "+33612345678"
SIX_DIGITS = re.compile(r"(?<!\d)\d{6}(?!\d)")


# --- fixtures and helpers ------------------------------------------------------------------


def two_factor_text(code: str) -> str:
    return f"Your sign-in code is {code}. It expires in 10 minutes. Never share it."


def form(request: httpx.Request) -> dict[str, str]:
    return dict(parse_qsl(request.content.decode()))


def twilio_takes_it(request: httpx.Request) -> httpx.Response:
    sent = form(request)
    return created(new_sid(), to=sent["To"], body=sent["Body"])


@pytest.fixture
def api(settings: Settings) -> Iterator[respx.MockRouter]:
    """Twilio, as respx: it takes every message; any other request fails the test."""
    with respx.mock(base_url=twilio_base(settings), assert_all_called=False) as router:
        router.post("/Messages.json", name="create").mock(side_effect=twilio_takes_it)
        yield router


@pytest.fixture
async def manager(make_api_key: MakeKey) -> dict[str, str]:
    return await make_api_key(Scope.USERS_WRITE, name="user-manager")


@pytest.fixture
async def service(make_api_key: MakeKey) -> dict[str, str]:
    return await make_api_key(Scope.SMS_SEND, name="login-service")


@asynccontextmanager
async def clients(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession] | None,
    ips: Sequence[str] = ("127.0.0.1",),
    **changes: Any,
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """The app with some settings changed, one client per IP: on the test's transaction, or
    with `sessionmaker=None` on its own pool (each request its own connection and commit)."""
    application = create_app(settings.model_copy(update=changes))
    if sessionmaker is not None:
        application.dependency_overrides[get_sessionmaker] = lambda: sessionmaker
    async with LifespanManager(application) as running:
        opened = [
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=running.app, client=(ip, 1234)),
                base_url="http://testserver",
            )
            for ip in ips
        ]
        try:
            yield opened
        finally:
            for client in opened:
                await client.aclose()


async def put_user(
    client: httpx.AsyncClient,
    manager: dict[str, str],
    user_id: str,
    number: str | None = NUMBER,
    *,
    verified: bool = True,
) -> None:
    body: Json = {"phone_number": number}
    if number is not None:
        body["phone_verified"] = verified
    response = await client.put(f"/api/users/{user_id}", json=body, headers=manager)
    assert response.status_code in (200, 201), response.text


async def message_of(
    session: AsyncSession, user_id: str, purpose: str = "two_factor"
) -> uuid.UUID | None:
    """The message carrying the user's current code for this purpose, if any."""
    found = await session.scalar(
        select(Verification.message_id)
        .join(User, User.id == Verification.user_id)
        .where(User.external_id == user_id, Verification.purpose == purpose)
        .execution_options(populate_existing=True)
    )
    return found


async def code_messages(session: AsyncSession) -> int:
    statement = select(func.count()).where(Message.category == "one_time_code")
    return int(await session.scalar(statement) or 0)


async def deliver(outbox: Outbox, api: respx.MockRouter, message_id: uuid.UUID | None) -> str:
    """The worker sends the message; returns the code as the recipient reads it."""
    assert message_id is not None
    creates = api.routes["create"].call_count
    attempt = await send_now(outbox, message_id)
    assert attempt.outcome is Outcome.ACCEPTED
    assert api.routes["create"].call_count == creates + 1
    return code_in(api.routes["create"].calls.last.request)


async def send_now(outbox: Outbox, message_id: uuid.UUID) -> Attempt:
    """The worker's attempt, with the message due (the database's now() is the test
    transaction's start, before the message was made)."""
    await make_due(outbox.sessionmaker, message_id)
    return await outbox.send(message_id)


def code_in(request: httpx.Request) -> str:
    codes = SIX_DIGITS.findall(form(request)["Body"])
    assert len(codes) == 1
    return str(codes[0])


def another(code: str, step: int = 1) -> str:
    return f"{(int(code) + step) % 1_000_000:06d}"


async def request_2fa(
    client: httpx.AsyncClient, user_id: str, *, headers: dict[str, str] | None = None
) -> httpx.Response:
    if headers is None:
        return await client.post(SEND_2FA, headers=as_user(user_id))
    return await client.post(SEND_2FA, json={"user_id": user_id}, headers=headers)


async def verify_2fa(client: httpx.AsyncClient, user_id: str, code: str) -> httpx.Response:
    return await client.post(VERIFY_2FA, json={"code": code}, headers=as_user(user_id))


def assert_accepted(response: httpx.Response, settings: Settings) -> None:
    assert response.status_code == 202, response.text
    assert response.json() == {
        "detail": "If the number can receive SMS, a code is on its way.",
        "expires_in_seconds": settings.otp_ttl_seconds,
        "resend_after_seconds": settings.otp_resend_cooldown_seconds,
    }


def assert_verified(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.json() == {"verified": True}


def assert_problem(response: httpx.Response, status: int, code: str) -> Json:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: Json = response.json()
    assert (problem["status"], problem["code"]) == (status, code)
    return problem


def assert_invalid(response: httpx.Response) -> None:
    assert_problem(response, 422, "invalid_code")


def assert_rate_limited(response: httpx.Response, *, at_least: int, at_most: int) -> int:
    assert_problem(response, 429, "rate_limited")
    retry_after = int(response.headers["Retry-After"])
    assert at_least <= retry_after <= at_most
    return retry_after


async def forget_cooldowns(redis_client: redis.asyncio.Redis) -> None:
    """The 30 s resend cooldown has passed (without waiting for it)."""
    keys = [key async for key in redis_client.scan_iter("ratelimit:otp:cooldown:*")]
    assert keys, "no cooldown was counted"
    await redis_client.delete(*keys)


# --- the code: right once, wrong five times, expired -----------------------------------------


async def test_the_code_message_is_in_the_users_language(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    manager: dict[str, str],
    session: AsyncSession,
    outbox: Outbox,
    api: respx.MockRouter,
    settings: Settings,
) -> None:
    await put_user(client, manager, "amelie")
    response = await client.put("/api/users/amelie", json={"locale": "fr-FR"}, headers=manager)
    assert response.status_code == 200, response.text

    assert_accepted(await request_2fa(client, "amelie"), settings)
    code = await deliver(outbox, api, await message_of(session, "amelie"))

    sent = form(api.routes["create"].calls.last.request)
    assert sent["Body"] == (
        f"Votre code de connexion est {code}. Il expire dans 10 minutes. Ne le partagez jamais."
    )
    assert_verified(await verify_2fa(client, "amelie", code))


async def test_the_right_code_approves_once_and_never_again(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    manager: dict[str, str],
    session: AsyncSession,
    outbox: Outbox,
    api: respx.MockRouter,
    settings: Settings,
) -> None:
    await put_user(client, manager, "alice")

    assert_accepted(await request_2fa(client, "alice"), settings)
    code = await deliver(outbox, api, await message_of(session, "alice"))
    sent = form(api.routes["create"].calls.last.request)
    assert sent["To"] == NUMBER
    assert sent["Body"] == (
        f"Your sign-in code is {code}. It expires in 10 minutes. Never share it."
    )

    assert_verified(await verify_2fa(client, "alice", code))
    assert_invalid(await verify_2fa(client, "alice", code))
    assert_invalid(await verify_2fa(client, "alice", code))


async def test_a_wrong_code_is_refused_and_the_right_one_still_works(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    manager: dict[str, str],
    session: AsyncSession,
    outbox: Outbox,
    api: respx.MockRouter,
) -> None:
    await put_user(client, manager, "bob")
    await request_2fa(client, "bob")
    code = await deliver(outbox, api, await message_of(session, "bob"))

    for step in range(1, 5):  # four wrong tries: one left
        assert_invalid(await verify_2fa(client, "bob", another(code, step)))

    assert_verified(await verify_2fa(client, "bob", code))


async def test_the_sixth_try_is_refused_even_with_the_right_code(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    manager: dict[str, str],
    session: AsyncSession,
    outbox: Outbox,
    api: respx.MockRouter,
) -> None:
    await put_user(client, manager, "carol")
    await request_2fa(client, "carol")
    code = await deliver(outbox, api, await message_of(session, "carol"))

    for step in range(1, 6):
        assert_invalid(await verify_2fa(client, "carol", another(code, step)))

    assert_invalid(await verify_2fa(client, "carol", code))


async def test_an_expired_code_is_refused(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    manager: dict[str, str],
    session: AsyncSession,
    outbox: Outbox,
    api: respx.MockRouter,
) -> None:
    await put_user(client, manager, "dave")
    await request_2fa(client, "dave")
    code = await deliver(outbox, api, await message_of(session, "dave"))

    await session.execute(
        update(Verification).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    )
    await session.commit()

    assert_invalid(await verify_2fa(client, "dave", code))


async def test_a_code_never_sent_and_a_user_with_no_code_are_refused(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    manager: dict[str, str],
    session: AsyncSession,
) -> None:
    await put_user(client, manager, "erin")
    assert_invalid(await verify_2fa(client, "erin", "123456"))  # nothing requested
    await request_2fa(client, "erin")  # requested, not sent yet: no code exists
    for guess in ("000000", "123456", "999999"):
        assert_invalid(await verify_2fa(client, "erin", guess))
    assert_invalid(await verify_2fa(client, "nobody-at-all", "123456"))


# --- resending: the cooldown, the replacement, the per-number limit ---------------------------


async def test_a_resend_within_the_cooldown_is_429_and_the_first_code_stands(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    manager: dict[str, str],
    session: AsyncSession,
    outbox: Outbox,
    api: respx.MockRouter,
    settings: Settings,
) -> None:
    await put_user(client, manager, "frank")
    assert_accepted(await request_2fa(client, "frank"), settings)
    first = await message_of(session, "frank")

    again = await request_2fa(client, "frank")

    assert_rate_limited(again, at_least=25, at_most=settings.otp_resend_cooldown_seconds)
    assert await code_messages(session) == 1
    assert await message_of(session, "frank") == first
    assert_verified(await verify_2fa(client, "frank", await deliver(outbox, api, first)))


async def test_a_resend_after_the_cooldown_invalidates_the_old_code(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    manager: dict[str, str],
    session: AsyncSession,
    outbox: Outbox,
    api: respx.MockRouter,
) -> None:
    await put_user(client, manager, "grace")
    await request_2fa(client, "grace")
    old = await deliver(outbox, api, await message_of(session, "grace"))
    await forget_cooldowns(redis_client)

    assert (await request_2fa(client, "grace")).status_code == 202
    new = await deliver(outbox, api, await message_of(session, "grace"))

    if new != old:  # one chance in a million they are the same digits
        assert_invalid(await verify_2fa(client, "grace", old))
    assert_verified(await verify_2fa(client, "grace", new))


async def test_with_no_cooldown_configured_a_resend_is_not_refused(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis_client: redis.asyncio.Redis,
    manager: dict[str, str],
    session: AsyncSession,
) -> None:
    async with clients(settings, sessionmaker, otp_resend_cooldown_seconds=0) as (client,):
        await put_user(client, manager, "hank")
        responses = [await request_2fa(client, "hank") for _ in range(3)]

    assert [response.status_code for response in responses] == [202, 202, 202]
    assert responses[0].json()["resend_after_seconds"] == 0
    assert await code_messages(session) == 3


async def test_at_most_five_codes_per_number_per_ten_minutes(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    manager: dict[str, str],
    session: AsyncSession,
    settings: Settings,
) -> None:
    # Two accounts sharing one number, and a third with a number of its own.
    await put_user(client, manager, "ivan", NUMBER)
    await put_user(client, manager, "ivy", NUMBER)
    await put_user(client, manager, "jack", OTHER_NUMBER)
    for user in ("ivan", "ivy", "ivan", "ivy", "ivan"):
        assert (await request_2fa(client, user)).status_code == 202
        await forget_cooldowns(redis_client)

    for user in ("ivan", "ivy"):
        refused = await request_2fa(client, user)
        # Not the 30 s cooldown: the number's 10-minute window.
        assert_rate_limited(refused, at_least=500, at_most=600)
        # Verifying a number another account has already verified sends nothing, and so
        # counts against nothing of that number's (else others could lock its owner out).
        silent = await client.post(START_VERIFICATION, headers=as_user(user))
        assert silent.status_code == 202

    assert await code_messages(session) == settings.otp_sends_per_number_per_10_minutes == 5
    assert (await request_2fa(client, "jack")).status_code == 202
    assert await code_messages(session) == 6


async def test_limits_per_user_and_per_ip(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis_client: redis.asyncio.Redis,
    manager: dict[str, str],
    session: AsyncSession,
) -> None:
    async with clients(
        settings,
        sessionmaker,
        ("198.51.100.1", "198.51.100.2"),
        otp_resend_cooldown_seconds=0,
        otp_sends_per_user_per_hour=3,
        otp_sends_per_ip_per_hour=4,
    ) as (first_ip, second_ip):
        # One user changing numbers: the per-user limit.
        for n in range(3):
            response = await first_ip.post(
                START_VERIFICATION,
                json={"phone_number": f"+1415555{n:04}"},
                headers=as_user("kim"),
            )
            assert response.status_code == 202, response.text
        refused = await first_ip.post(
            START_VERIFICATION, json={"phone_number": "+14155550099"}, headers=as_user("kim")
        )
        assert_rate_limited(refused, at_least=3500, at_most=3600)
        # The refused request changed nothing: the profile still has the last number.
        profile = (await first_ip.get("/api/user/profile", headers=as_user("kim"))).json()
        assert profile["phone_number"] == "+14155550002"

        # Other users from the same IP: the per-IP limit (4 per hour: kim's three and lee's
        # one; kim's refused request counted against nothing).
        await first_ip.post(
            START_VERIFICATION, json={"phone_number": "+14155550100"}, headers=as_user("lee")
        )
        refused = await first_ip.post(
            START_VERIFICATION, json={"phone_number": "+14155550200"}, headers=as_user("max")
        )
        assert_rate_limited(refused, at_least=3500, at_most=3600)
        accepted = await second_ip.post(
            START_VERIFICATION, json={"phone_number": "+14155550200"}, headers=as_user("max")
        )
        assert accepted.status_code == 202

    assert await code_messages(session) == 5


# --- nothing tells who exists; nothing keeps the code ----------------------------------------


async def exchange(
    redis_client: redis.asyncio.Redis, send: Callable[[], Awaitable[httpx.Response]]
) -> list[tuple[int, Any, str | None]]:
    """What a caller sees of two requests in a row (the second within the cooldown), from
    fresh counters: status, body and Retry-After of each."""
    await redis_client.flushdb()
    seen = []
    for _ in range(2):
        response = await send()
        seen.append((response.status_code, response.json(), response.headers.get("Retry-After")))
    return seen


def not_in(code: str, text_: str) -> bool:
    """The code appears nowhere in the text as a number of its own (hex digests and
    ciphertexts may hold the six digits by chance, inside a longer hex string)."""
    return re.search(rf"(?<![0-9a-fA-F]){code}(?![0-9a-fA-F])", text_) is None


async def table_dump(session: AsyncSession, table: str) -> list[str]:
    rows = await session.execute(text(f"SELECT t::text FROM {table} AS t"))  # noqa: S608
    return [str(row[0]) for row in rows]


async def test_the_raw_tables_the_logs_and_the_answers_hold_no_code(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    manager: dict[str, str],
    session: AsyncSession,
    outbox: Outbox,
    api: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="app.twilio.client")
    await put_user(client, manager, "olga")

    requested = await client.post(
        START_VERIFICATION,
        json={"phone_number": OTHER_NUMBER},
        headers={**as_user("olga"), "Idempotency-Key": "olga-verifies-1"},
    )
    replayed = await client.post(
        START_VERIFICATION,
        json={"phone_number": OTHER_NUMBER},
        headers={**as_user("olga"), "Idempotency-Key": "olga-verifies-1"},
    )
    verification_code = await deliver(
        outbox, api, await message_of(session, "olga", "phone_verification")
    )
    wrong = await client.post(
        CHECK_VERIFICATION, json={"code": another(verification_code)}, headers=as_user("olga")
    )
    right = await client.post(
        CHECK_VERIFICATION, json={"code": verification_code}, headers=as_user("olga")
    )
    await request_2fa(client, "olga")
    two_factor_code = await deliver(outbox, api, await message_of(session, "olga"))
    assert_verified(await verify_2fa(client, "olga", two_factor_code))
    status = await client.get(
        f"/api/sms/status/{await message_of(session, 'olga')}", headers=as_user("olga")
    )

    assert replayed.headers.get("Idempotent-Replayed") == "true"
    assert_invalid(wrong)
    assert_verified(right)
    assert status.status_code == 200
    assert status.json()["body"] is None
    tables = {
        table: await table_dump(session, table)
        for table in ("messages", "verifications", "message_events", "idempotency_keys")
    }
    assert all(tables.values()), tables  # the flow really left rows in each
    # The logs are not silent either: the test would see a code if one were logged.
    assert any("Messages.json" in record.getMessage() for record in caplog.records)
    for code in (verification_code, two_factor_code):
        for table, rows in tables.items():
            assert all(not_in(code, row) for row in rows), table
        assert not_in(code, caplog.text)
        for record in caplog.records:
            assert not_in(code, record.getMessage())
        for response in (requested, replayed, right, status):
            assert not_in(code, response.text)


async def test_known_and_unknown_users_get_the_same_answers(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    manager: dict[str, str],
    service: dict[str, str],
    session: AsyncSession,
) -> None:
    await put_user(client, manager, "known")
    await put_user(client, manager, "unverified", OTHER_NUMBER, verified=False)
    await put_user(client, manager, "numberless", None)

    def by_service(user_id: str) -> Callable[[], Awaitable[httpx.Response]]:
        return lambda: request_2fa(client, user_id, headers=service)

    def by_user(user_id: str) -> Callable[[], Awaitable[httpx.Response]]:
        return lambda: request_2fa(client, user_id)

    def start(user_id: str) -> Callable[[], Awaitable[httpx.Response]]:
        return lambda: client.post(START_VERIFICATION, headers=as_user(user_id))

    known = await exchange(redis_client, by_service("known"))
    assert [status for status, _, _ in known] == [202, 429]  # the second: the cooldown
    for user_id in ("never-seen", "unverified", "numberless"):
        assert await exchange(redis_client, by_service(user_id)) == known, user_id
    for user_id in ("known", "never-seen", "unverified", "numberless"):
        assert await exchange(redis_client, by_user(user_id)) == known, user_id
    for user_id in ("numberless", "never-seen-either"):
        assert await exchange(redis_client, start(user_id)) == known, user_id

    # Checks: one refusal for everyone, whether a code, a number or the user exists.
    answers = set()
    for user_id in ("known", "never-seen", "unverified", "numberless"):
        response = await client.post(
            VERIFY_2FA, json={"code": "123456", "user_id": user_id}, headers=service
        )
        answers.add((response.status_code, response.text))
    assert len(answers) == 1
    assert answers.pop()[0] == 422

    # Only the known user, with a verified number, was sent a code.
    sent_to = await session.scalars(
        select(User.external_id)
        .join(Message, Message.user_id == User.id)
        .where(Message.category == "one_time_code")
    )
    assert set(sent_to) == {"known"}


async def test_a_service_sends_and_checks_codes_for_the_user_it_names(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    manager: dict[str, str],
    service: dict[str, str],
    make_api_key: MakeKey,
    session: AsyncSession,
    outbox: Outbox,
    api: respx.MockRouter,
    settings: Settings,
) -> None:
    await put_user(client, manager, "rita")
    assert_accepted(await request_2fa(client, "rita", headers=service), settings)
    code = await deliver(outbox, api, await message_of(session, "rita"))

    # Neither a user for someone else nor a service without `sms:send` may ask or check.
    reader = await make_api_key(Scope.SMS_READ, name="reader")
    assert_problem(
        await request_2fa(client, "rita", headers=as_user("mallory")), 403, "missing_scope"
    )
    assert_problem(await request_2fa(client, "rita", headers=reader), 403, "missing_scope")
    for headers in (as_user("mallory"), reader):
        refused = await client.post(
            VERIFY_2FA, json={"code": code, "user_id": "rita"}, headers=headers
        )
        assert_problem(refused, 403, "missing_scope")
    assert_problem(await client.post(SEND_2FA, json={}, headers=service), 422, "unprocessable")

    checked = await client.post(VERIFY_2FA, json={"code": code, "user_id": "rita"}, headers=service)
    assert_verified(checked)
    assert_invalid(await verify_2fa(client, "rita", code))  # used: not by the user either


# --- phone verification -----------------------------------------------------------------------


async def profile(client: httpx.AsyncClient, user_id: str) -> Json:
    response = await client.get("/api/user/profile", headers=as_user(user_id))
    assert response.status_code == 200, response.text
    found: Json = response.json()
    return found


async def test_phone_verification_end_to_end_marks_the_number_verified(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    session: AsyncSession,
    outbox: Outbox,
    api: respx.MockRouter,
    settings: Settings,
) -> None:
    started = await client.post(
        START_VERIFICATION, json={"phone_number": "+1 (415) 555-2671"}, headers=as_user("pat")
    )
    assert_accepted(started, settings)
    assert (await profile(client, "pat"))["phone_number"] == NUMBER
    assert (await profile(client, "pat"))["phone_verified"] is False
    # Until it is verified, the number is no second factor.
    assert (await request_2fa(client, "pat")).status_code == 202
    assert await message_of(session, "pat") is None

    code = await deliver(outbox, api, await message_of(session, "pat", "phone_verification"))
    assert form(api.routes["create"].calls.last.request)["To"] == NUMBER
    # A 2FA code is no phone-verification code.
    assert_invalid(await verify_2fa(client, "pat", code))
    wrong = await client.post(
        CHECK_VERIFICATION, json={"code": another(code)}, headers=as_user("pat")
    )
    assert_invalid(wrong)
    assert (await profile(client, "pat"))["phone_verified"] is False

    checked = await client.post(CHECK_VERIFICATION, json={"code": code}, headers=as_user("pat"))

    assert_verified(checked)
    assert (await profile(client, "pat"))["phone_verified"] is True
    await forget_cooldowns(redis_client)
    assert (await request_2fa(client, "pat")).status_code == 202
    assert await message_of(session, "pat") is not None  # now it is


async def test_a_number_changed_after_the_code_was_sent_makes_the_code_invalid(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    manager: dict[str, str],
    session: AsyncSession,
    outbox: Outbox,
    api: respx.MockRouter,
) -> None:
    await client.post(START_VERIFICATION, json={"phone_number": NUMBER}, headers=as_user("quinn"))
    code = await deliver(outbox, api, await message_of(session, "quinn", "phone_verification"))

    changed = await client.patch(
        "/api/user/profile", json={"phone_number": OTHER_NUMBER}, headers=as_user("quinn")
    )
    assert changed.status_code == 200, changed.text
    checked = await client.post(CHECK_VERIFICATION, json={"code": code}, headers=as_user("quinn"))

    assert_invalid(checked)
    assert (await profile(client, "quinn"))["phone_verified"] is False

    # The same for a 2FA code: it belongs to the number it went to.
    await put_user(client, manager, "ruth", NUMBER)
    await request_2fa(client, "ruth")
    two_factor = await deliver(outbox, api, await message_of(session, "ruth"))
    await put_user(client, manager, "ruth", OTHER_NUMBER)
    assert_invalid(await verify_2fa(client, "ruth", two_factor))


@pytest.mark.parametrize(
    ("number", "kind"),
    [("+19002001234", "premium rate"), ("+34901123456", "shared cost")],
)
async def test_premium_rate_and_shared_cost_numbers_are_refused(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    session: AsyncSession,
    number: str,
    kind: str,
) -> None:
    await client.post(START_VERIFICATION, json={"phone_number": NUMBER}, headers=as_user("sam"))

    response = await client.post(
        START_VERIFICATION, json={"phone_number": number}, headers=as_user("sam")
    )

    problem = assert_problem(response, 422, "invalid_phone_number")
    assert kind in problem["detail"]
    assert (await profile(client, "sam"))["phone_number"] == NUMBER
    assert await code_messages(session) == 1  # only the first, to the mobile number


# --- numbers that must get nothing ------------------------------------------------------------


async def test_a_number_that_replied_stop_gets_nothing(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    manager: dict[str, str],
    session: AsyncSession,
    cipher: PhoneCipher,
    settings: Settings,
) -> None:
    await put_user(client, manager, "tom", NUMBER)
    await put_user(client, manager, "tina", OTHER_NUMBER)
    await optouts.opt_out(session, cipher.blind_index(NUMBER), source="inbound", keyword="STOP")
    await session.commit()

    assert_accepted(await request_2fa(client, "tom"), settings)
    assert_accepted(await client.post(START_VERIFICATION, headers=as_user("tom")), settings)
    assert await code_messages(session) == 0

    assert_accepted(await request_2fa(client, "tina"), settings)
    assert await code_messages(session) == 1


async def test_a_country_outside_the_allowed_ones_gets_nothing_and_is_not_told(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis_client: redis.asyncio.Redis,
    manager: dict[str, str],
    session: AsyncSession,
) -> None:
    async with clients(settings, sessionmaker, sms_allowed_countries=["US"]) as (client,):
        await put_user(client, manager, "ulla", FR_NUMBER)
        await put_user(client, manager, "uma", NUMBER)

        assert_accepted(await request_2fa(client, "ulla"), settings)
        started = await client.post(
            START_VERIFICATION, json={"phone_number": "+33612345679"}, headers=as_user("ulla")
        )
        assert_accepted(started, settings)
        assert await code_messages(session) == 0

        assert_accepted(await request_2fa(client, "uma"), settings)
        assert await code_messages(session) == 1


# --- metrics ------------------------------------------------------------------------------


async def code_counts(client: httpx.AsyncClient) -> dict[tuple[str, str], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name in ("sms_codes_sent_total", "sms_codes_verified_total"):
                counts[(sample.name, sample.labels["country"])] = sample.value
    return counts


async def test_the_metrics_count_sends_and_verifications_per_country(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    manager: dict[str, str],
    session: AsyncSession,
    outbox: Outbox,
    api: respx.MockRouter,
) -> None:
    await put_user(client, manager, "vera", NUMBER)
    await put_user(client, manager, "victor", FR_NUMBER)
    await put_user(client, manager, "viola", OTHER_NUMBER, verified=False)
    before = await code_counts(client)

    await request_2fa(client, "vera")
    assert (await request_2fa(client, "vera")).status_code == 429  # refused: not a send
    code = await deliver(outbox, api, await message_of(session, "vera"))
    assert_invalid(await verify_2fa(client, "vera", another(code)))  # not a verification
    assert_verified(await verify_2fa(client, "vera", code))
    await request_2fa(client, "victor")  # sent, never verified: what pumping looks like
    await request_2fa(client, "viola")  # nothing sent: unverified number

    after = await code_counts(client)

    def delta(name: str, country: str) -> float:
        key = (f"sms_codes_{name}_total", country)
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert (delta("sent", "US"), delta("verified", "US")) == (1, 1)
    assert (delta("sent", "FR"), delta("verified", "FR")) == (1, 0)


# --- the outbox: priority, reconciliation, replaced codes -------------------------------------


@pytest.fixture
async def arq_redis(
    settings: Settings, redis_client: redis.asyncio.Redis
) -> AsyncIterator[ArqRedis]:
    pool = await create_redis(settings)
    yield pool
    await pool.aclose()


async def test_a_code_goes_to_the_front_of_the_queue(
    client: httpx.AsyncClient,
    arq_redis: ArqRedis,
    manager: dict[str, str],
    service: dict[str, str],
    session: AsyncSession,
) -> None:
    await put_user(client, manager, "wendy")
    campaign = []
    for n in range(3):
        response = await client.post(
            "/api/sms/send", json={"to": OTHER_NUMBER, "body": f"Sale {n}"}, headers=service
        )
        assert response.status_code == 202, response.text
        campaign.append(response.json()["id"])

    assert (await request_2fa(client, "wendy")).status_code == 202

    code_message = str(await message_of(session, "wendy"))
    queue = [job.decode() for job in await arq_redis.zrange("arq:queue", 0, -1)]
    assert sorted(queue) == sorted([*campaign, code_message])
    assert await arq_redis.zrange("arq:queue", 0, 0) == [code_message.encode()]
    assert queue[1:] == campaign  # the campaign keeps its own order behind it


async def test_an_ambiguous_create_is_reconciled_by_the_code_in_twilios_copy(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    manager: dict[str, str],
    session: AsyncSession,
    outbox: Outbox,
    api: respx.MockRouter,
    settings: Settings,
) -> None:
    await put_user(client, manager, "xena")
    await request_2fa(client, "xena")
    message_id = await message_of(session, "xena")
    assert message_id is not None
    create = api.routes["create"]
    create.side_effect = httpx.ReadTimeout("no answer")

    first = await send_now(outbox, message_id)

    assert first.outcome is Outcome.RETRY
    assert create.call_count == 1
    code = code_in(create.calls.last.request)
    sid = new_sid()
    # Twilio did take it; its list also holds an older code to the same number.
    listing = api.get("/Messages.json").mock(
        return_value=page(
            resource(sid, body=two_factor_text(code), status="sent"),
            resource(new_sid(), body=two_factor_text(another(code))),
        )
    )
    create.side_effect = twilio_takes_it

    second = await send_now(outbox, message_id)

    assert second.outcome is Outcome.ADOPTED
    assert listing.call_count == 1
    assert create.call_count == 1  # never sent twice
    message = await load(outbox.sessionmaker, message_id)
    assert (message.twilio_sid, message.status) == (sid, "sent")
    assert message.body is None
    assert_verified(await verify_2fa(client, "xena", code))


async def test_a_code_replaced_before_the_worker_sent_it_is_cancelled_not_sent(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    manager: dict[str, str],
    session: AsyncSession,
    outbox: Outbox,
    api: respx.MockRouter,
) -> None:
    await put_user(client, manager, "yuri")
    await request_2fa(client, "yuri")
    replaced = await message_of(session, "yuri")
    assert replaced is not None
    await forget_cooldowns(redis_client)
    await request_2fa(client, "yuri")
    current = await message_of(session, "yuri")
    assert current is not None
    assert current != replaced

    attempt = await send_now(outbox, replaced)

    assert attempt.outcome is Outcome.SUPPRESSED
    assert api.routes["create"].call_count == 0
    assert (await load(outbox.sessionmaker, replaced)).status == "cancelled"
    assert_verified(await verify_2fa(client, "yuri", await deliver(outbox, api, current)))


async def test_a_code_used_or_expired_before_the_worker_sent_it_is_not_sent(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    manager: dict[str, str],
    session: AsyncSession,
    outbox: Outbox,
    api: respx.MockRouter,
) -> None:
    await put_user(client, manager, "zoe")
    await request_2fa(client, "zoe")
    message_id = await message_of(session, "zoe")
    assert message_id is not None
    await session.execute(
        update(Verification).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
    )
    await session.commit()

    attempt = await send_now(outbox, message_id)

    assert attempt.outcome is Outcome.SUPPRESSED
    assert api.routes["create"].call_count == 0
    assert (await load(outbox.sessionmaker, message_id)).status == "cancelled"


async def test_twilio_is_told_to_drop_a_code_message_once_the_code_has_expired(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    manager: dict[str, str],
    session: AsyncSession,
    outbox: Outbox,
    api: respx.MockRouter,
    settings: Settings,
) -> None:
    await put_user(client, manager, "zack")
    await request_2fa(client, "zack")
    await deliver(outbox, api, await message_of(session, "zack"))

    validity = int(form(api.routes["create"].calls.last.request)["ValidityPeriod"])

    assert validity <= settings.otp_ttl_seconds


# --- concurrent requests, committed for real -----------------------------------------------

LIVE = "codes-live-"


@asynccontextmanager
async def live_clients(
    settings: Settings,
    engine: AsyncEngine,
    ips: Sequence[str] = ("127.0.0.1",),
    **changes: Any,
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """`clients` on the app's own pool; the users named LIVE… and their messages are deleted
    afterwards."""
    try:
        async with clients(settings, None, ips, **changes) as opened:
            yield opened
    finally:
        async with engine.begin() as connection:
            ours = {"pattern": f"{LIVE}%"}
            await connection.execute(
                text(
                    "DELETE FROM messages WHERE user_id IN "
                    "(SELECT id FROM users WHERE external_id LIKE :pattern)"
                ),
                ours,
            )
            await connection.execute(
                text("DELETE FROM users WHERE external_id LIKE :pattern"), ours
            )


@pytest.fixture
async def live(
    settings: Settings, engine: AsyncEngine, redis_client: redis.asyncio.Redis
) -> AsyncIterator[httpx.AsyncClient]:
    """Without a resend cooldown, so that requests for one user may race."""
    async with live_clients(settings, engine, otp_resend_cooldown_seconds=0) as (client,):
        yield client


@pytest.fixture
def live_outbox(
    settings: Settings, engine: AsyncEngine, cipher: PhoneCipher, twilio: TwilioClient
) -> Outbox:
    return Outbox(settings, create_sessionmaker(engine), cipher, twilio, random.Random(7))


async def live_code(
    live: httpx.AsyncClient, outbox: Outbox, api: respx.MockRouter, user_id: str
) -> str:
    started = await live.post(
        START_VERIFICATION, json={"phone_number": NUMBER}, headers=as_user(user_id)
    )
    assert started.status_code == 202, started.text
    async with outbox.sessionmaker() as session:
        message_id = await message_of(session, user_id, "phone_verification")
    return await deliver(outbox, api, message_id)


async def test_a_right_code_checked_many_times_at_once_approves_once(
    live: httpx.AsyncClient, live_outbox: Outbox, api: respx.MockRouter
) -> None:
    user = f"{LIVE}racer"
    code = await live_code(live, live_outbox, api, user)

    responses = await asyncio.gather(
        *(
            live.post(CHECK_VERIFICATION, json={"code": code}, headers=as_user(user))
            for _ in range(10)
        )
    )

    assert sorted(response.status_code for response in responses) == [200] + [422] * 9


async def test_many_wrong_tries_at_once_still_kill_the_code_after_five(
    live: httpx.AsyncClient, live_outbox: Outbox, api: respx.MockRouter
) -> None:
    user = f"{LIVE}guesser"
    code = await live_code(live, live_outbox, api, user)

    responses = await asyncio.gather(
        *(
            live.post(CHECK_VERIFICATION, json={"code": another(code, n)}, headers=as_user(user))
            for n in range(1, 21)
        )
    )

    assert {response.status_code for response in responses} == {422}
    checked = await live.post(CHECK_VERIFICATION, json={"code": code}, headers=as_user(user))
    assert_invalid(checked)


async def test_requests_for_codes_racing_each_other_all_get_their_answer(
    live: httpx.AsyncClient, live_outbox: Outbox, api: respx.MockRouter
) -> None:
    user = f"{LIVE}double-click"
    code = await live_code(live, live_outbox, api, user)
    checked = await live.post(CHECK_VERIFICATION, json={"code": code}, headers=as_user(user))
    assert_verified(checked)  # a verified number: 2FA codes go to it

    responses = await asyncio.gather(
        *(live.post(SEND_2FA, headers=as_user(user)) for _ in range(4))
    )

    assert [response.status_code for response in responses] == [202] * 4
    # Four messages, one current code: the worker sends that one and cancels the others.
    async with live_outbox.sessionmaker() as session:
        queued = (
            await session.scalars(
                select(Message.id)
                .join(User, User.id == Message.user_id)
                .where(User.external_id == user, Message.status == "queued")
            )
        ).all()
    assert len(queued) == 4
    creates = api.routes["create"].call_count
    outcomes = [(await live_outbox.send(message_id)).outcome for message_id in queued]
    assert sorted(outcomes) == sorted([Outcome.ACCEPTED] + [Outcome.SUPPRESSED] * 3)
    assert api.routes["create"].call_count == creates + 1
    code = code_in(api.routes["create"].calls.last.request)
    verified = await live.post(VERIFY_2FA, json={"code": code}, headers=as_user(user))
    assert_verified(verified)


# --- SMS pumping: a burst over one number prefix, from a few IPs, at once ------------


async def add_verified_users(
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    numbers: dict[str, str],
) -> None:
    """Users with verified numbers, inserted directly: as the users API would leave them."""
    async with transaction(sessionmaker) as session:
        ids = await users_service.ensure_users(session, list(numbers))
        now = datetime.now(UTC)
        await session.execute(
            update(User),
            [
                {
                    "id": ids[user_id],
                    "phone_encrypted": cipher.encrypt(number),
                    "phone_index": cipher.blind_index(number),
                    "phone_region": "US",
                    "phone_verified_at": now,
                }
                for user_id, number in numbers.items()
            ],
        )


async def test_a_burst_over_consecutive_numbers_of_one_prefix_sends_at_most_the_prefix_limit(
    settings: Settings,
    engine: AsyncEngine,
    cipher: PhoneCipher,
    redis_client: redis.asyncio.Redis,
    live_outbox: Outbox,
    api: respx.MockRouter,
) -> None:
    # A ring of accounts, each with a verified number of one rented block, asks for codes at
    # once from three IPs, each of which may ask far more than the burst: only the prefix
    # limit (all but the last 3 digits) may stop them.
    sessionmaker = live_outbox.sessionmaker
    numbers = {f"{LIVE}pump-{n:04}": f"+1415555{n:04}" for n in range(1000)}
    prefix_limit = settings.otp_sends_per_prefix_per_hour
    assert prefix_limit == 20
    ips = ("203.0.113.7", "203.0.113.8", "203.0.113.9")

    async with live_clients(settings, engine, ips, otp_sends_per_ip_per_hour=10_000) as clients_:
        await add_verified_users(sessionmaker, cipher, numbers)
        at_once = asyncio.Semaphore(30)

        async def ask(n: int, user_id: str) -> httpx.Response:
            async with at_once:
                return await request_2fa(clients_[n % len(clients_)], user_id)

        responses = await asyncio.gather(*(ask(n, user) for n, user in enumerate(numbers)))

        statuses = [response.status_code for response in responses]
        assert (statuses.count(202), statuses.count(429)) == (prefix_limit, 1000 - prefix_limit)
        for response in responses:
            if response.status_code == 429:
                assert_rate_limited(response, at_least=3500, at_most=3600)
        async with sessionmaker() as session:
            sent = (
                await session.scalars(
                    select(Message.id)
                    .join(User, User.id == Message.user_id)
                    .where(User.external_id.like(f"{LIVE}pump-%"))
                    .where(Message.category == "one_time_code")
                )
            ).all()
        assert len(sent) == prefix_limit
        for message_id in sent:
            assert (await live_outbox.send(message_id)).outcome is Outcome.ACCEPTED
        assert api.routes["create"].call_count == prefix_limit

        # Another block is not held back by this one.
        await add_verified_users(sessionmaker, cipher, {f"{LIVE}elsewhere": "+14155551000"})
        assert (await request_2fa(clients_[0], f"{LIVE}elsewhere")).status_code == 202


async def test_known_and_unknown_users_take_as_long_to_answer(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    manager: dict[str, str],
    service: dict[str, str],
    redis_client: redis.asyncio.Redis,
) -> None:
    # A user with a number costs a verification and a message row; one who does not exist
    # costs nothing. The floor hides the difference from anyone timing the answers.
    async with clients(
        settings, sessionmaker, otp_response_floor_ms=300, otp_resend_cooldown_seconds=0
    ) as (client,):
        await put_user(client, manager, "timed-known")
        timings: dict[str, list[float]] = {"timed-known": [], "timed-nobody": []}
        for round_ in range(3):
            for user_id in timings:
                started = time.perf_counter()
                response = await request_2fa(client, user_id, headers=service)
                timings[user_id].append(time.perf_counter() - started)
                assert response.status_code == 202, (round_, response.text)
        # Checks too: a wrong code for a real code costs a write, for nobody it costs none.
        started = time.perf_counter()
        invalid = await client.post(
            "/api/sms/verify-2fa",
            json={"code": "000000", "user_id": "timed-nobody"},
            headers=service,
        )
        check_time = time.perf_counter() - started

    assert invalid.status_code == 422
    assert check_time >= 0.3
    assert min(min(values) for values in timings.values()) >= 0.3
    known, nobody = (sorted(values)[1] for values in timings.values())  # medians
    assert abs(known - nobody) < 0.1


async def test_others_naming_a_verified_number_cannot_lock_its_owner_out(
    client: httpx.AsyncClient,
    redis_client: redis.asyncio.Redis,
    manager: dict[str, str],
    session: AsyncSession,
) -> None:
    await put_user(client, manager, "owner", NUMBER)  # verified
    for attacker in ("mallory-1", "mallory-2", "mallory-3", "mallory-4", "mallory-5", "mallory-6"):
        answer = await client.post(
            START_VERIFICATION, json={"phone_number": NUMBER}, headers=as_user(attacker)
        )
        assert answer.status_code == 202  # the same answer as ever: nothing tells them

    assert await code_messages(session) == 0  # and the owner's phone got nothing
    assert (await request_2fa(client, "owner")).status_code == 202
    assert await code_messages(session) == 1


async def test_services_are_not_held_to_the_per_ip_limit(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    manager: dict[str, str],
    service: dict[str, str],
    redis_client: redis.asyncio.Redis,
    session: AsyncSession,
) -> None:
    # A login service asks for all its users from one address.
    async with clients(settings, sessionmaker, otp_sends_per_ip_per_hour=2) as (client,):
        for n in range(4):
            await put_user(client, manager, f"svc-user-{n}", f"+1415555{7000 + n:04d}")
            answer = await request_2fa(client, f"svc-user-{n}", headers=service)
            assert answer.status_code == 202, answer.text

    assert await code_messages(session) == 4
