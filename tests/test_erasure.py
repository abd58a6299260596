"""Erasing a user (API and CLI), proven by reading the raw tables afterwards: the user, their
number, its blind index and their id are gone from every table but the suppression list and
consent events; their messages stay, anonymous, in the counts; the erasure is recorded under a
keyed hash of the id."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, cast

import httpx
import pytest
import redis.asyncio
from asgi_lifespan import LifespanManager
from click.testing import CliRunner
from sqlalchemy import CursorResult, RowMapping, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from app.auth import api_keys
from app.auth.principal import Scope
from app.cli import cli
from app.core.crypto import PhoneCipher
from app.core.database import create_engine, create_sessionmaker, transaction
from app.core.settings import Settings
from app.main import create_app
from tests.conftest import as_user, bearer

MakeKey = Callable[..., Awaitable[dict[str, str]]]
Json = dict[str, Any]

# Where the erased user's number, index and id may stay: the proof of an opt-out, which also
# keeps a STOP working for the number.
KEPT_FOR_CONSENT = {("suppressions", "phone_index"), ("consent_events", "phone_index")}


class Sql(Protocol):
    async def __call__(self, query: str, **params: Any) -> list[RowMapping]: ...


def on_session(session: AsyncSession) -> Sql:
    """Raw SQL on the test's transaction (what the app wrote there)."""

    async def run(query: str, **params: Any) -> list[RowMapping]:
        result = cast(CursorResult[Any], await session.execute(text(query), params))
        return list(result.mappings()) if result.returns_rows else []

    return run


def on_connection(connection: AsyncConnection) -> Sql:
    async def run(query: str, **params: Any) -> list[RowMapping]:
        result = await connection.execute(text(query), params)
        return list(result.mappings()) if result.returns_rows else []

    return run


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def unique_number() -> str:
    # 555-01XX are fictional numbers; the rest of the exchange is as valid for the parser.
    return f"+1415555{secrets.randbelow(10_000):04d}"


def expected_hash(settings: Settings, user_id: str) -> bytes:
    """Written out independently of the service: HMAC-SHA256 of the id under a key derived
    from PHONE_BLIND_INDEX_KEY with the label `erasure-records`."""
    root = settings.phone_blind_index_key.get_secret_value().encode()
    derived = hmac.new(root, b"erasure-records", hashlib.sha256).digest()
    return hmac.new(derived, user_id.encode(), hashlib.sha256).digest()


@dataclass
class World:
    """A user with everything the service can hold about them, and a team mate beside them."""

    user: str
    other: str
    number: str
    other_number: str
    index: bytes
    user_uuid: uuid.UUID
    other_uuid: uuid.UUID
    key_id: str
    queued_id: uuid.UUID
    delivered_id: uuid.UUID
    delivered_sid: str
    self_test_id: uuid.UUID
    notification_id: uuid.UUID
    booking_id: str
    topic: str
    their_messages: int
    message_ids: list[uuid.UUID]
    notification_ids: list[uuid.UUID]


SEND_BODY = "Hi Ada Lovelace, your table for 2 at Chez Léa is ready"
BOOKING = {
    "customer_name": "Ada Lovelace",
    "service_name": "Haircut",
    "provider_name": "Studio K",
    "starts_at": "2026-03-10T14:30:00Z",
    "seats": 2,
    "booking_reference": "BK-7",
}


def send_request(user: str) -> Json:
    return {"user_id": user, "body": SEND_BODY}


def notify_request(world_user: str, other: str, booking_id: str) -> Json:
    return {
        "event": "booking.confirmed",
        "data": BOOKING,
        "recipients": {"user_ids": [world_user, other]},
        "reference": booking_id,
    }


async def build_world(
    client: httpx.AsyncClient, service: dict[str, str], sql: Sql, cipher: PhoneCipher
) -> World:
    """Through the API as the platform would: profiles, preferences, a team, messages (queued,
    delivered, a notify, scheduled reminders, a self-test, a verification code), idempotent
    requests by the service and by the user; then a STOP from the number."""
    user, other = unique("erase-me"), unique("team-mate")
    number, other_number = unique_number(), unique_number()
    topic, booking_id = unique("team"), unique("bk")
    own = as_user(user)

    for who, phone in ((user, number), (other, other_number)):
        put = await client.put(
            f"/api/users/{who}",
            json={"phone_number": phone, "phone_verified": True},
            headers=service,
        )
        assert put.status_code == 201, put.text
    preferences = await client.put(
        f"/api/users/{user}/preferences", json={"marketing": True}, headers=service
    )
    assert preferences.status_code == 200, preferences.text
    team = await client.post(
        f"/api/topics/{topic}/subscribers", json={"user_ids": [user, other]}, headers=service
    )
    assert team.status_code in (200, 201), team.text

    queued = await client.post(
        "/api/sms/send",
        json=send_request(user),
        headers={**service, "Idempotency-Key": "erase-send-1"},
    )
    assert queued.status_code == 202, queued.text
    assert queued.json()["user_id"] == user
    delivered = await client.post(
        "/api/sms/send", json={"user_id": user, "body": "Hi Ada, see you at 3"}, headers=service
    )
    assert delivered.status_code == 202, delivered.text
    notify = await client.post(
        "/api/sms/notify",
        json=notify_request(user, other, booking_id),
        headers={**service, "Idempotency-Key": "erase-notify-1"},
    )
    assert notify.status_code == 202, notify.text
    starts_at = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
    reminders = await client.put(
        f"/api/sms/bookings/{booking_id}/reminders",
        json={
            "user_id": user,
            "starts_at": starts_at.isoformat(),
            "service_name": "Haircut",
            "provider_name": "Studio K",
        },
        headers=service,
    )
    assert reminders.status_code in (200, 201), reminders.text
    self_test = await client.post(
        "/api/sms/test", headers={**own, "Idempotency-Key": "erase-self-test-1"}
    )
    assert self_test.status_code == 202, self_test.text
    verification = await client.post("/api/user/phone/verification", headers=own)
    assert verification.status_code == 202, verification.text

    # Twilio took the second message and it was delivered and priced.
    delivered_id, sid = uuid.UUID(delivered.json()["id"]), "SM" + uuid.uuid4().hex
    await sql(
        "UPDATE messages SET status = 'delivered', twilio_status = 'delivered', "
        "twilio_sid = :sid, price = -0.0079, price_unit = 'USD', final_at = now() "
        "WHERE id = :id",
        sid=sid,
        id=delivered_id,
    )
    # Then the number replied STOP.
    index = cipher.blind_index(number)
    await sql("INSERT INTO suppressions (phone_index, reason) VALUES (:index, 'stop')", index=index)
    await sql(
        "INSERT INTO consent_events (phone_index, kind, keyword, source) "
        "VALUES (:index, 'opt_out', 'STOP', 'inbound_sms')",
        index=index,
    )

    [ids] = await sql(
        "SELECT (SELECT id FROM users WHERE external_id = :user) AS user_uuid, "
        "(SELECT id FROM users WHERE external_id = :other) AS other_uuid",
        user=user,
        other=other,
    )
    rows = await sql(
        "SELECT id, notification_id FROM messages WHERE user_id IN (:a, :b)",
        a=ids["user_uuid"],
        b=ids["other_uuid"],
    )
    theirs = await sql("SELECT count(*) AS n FROM messages WHERE user_id = :a", a=ids["user_uuid"])
    return World(
        user=user,
        other=other,
        number=number,
        other_number=other_number,
        index=index,
        user_uuid=ids["user_uuid"],
        other_uuid=ids["other_uuid"],
        key_id=queued.json()["requested_by"].removeprefix("api_key:"),
        queued_id=uuid.UUID(queued.json()["id"]),
        delivered_id=delivered_id,
        delivered_sid=sid,
        self_test_id=uuid.UUID(self_test.json()["id"]),
        notification_id=uuid.UUID(notify.json()["notification_id"]),
        booking_id=booking_id,
        topic=topic,
        their_messages=theirs[0]["n"],
        message_ids=[row["id"] for row in rows],
        notification_ids=sorted({row["notification_id"] for row in rows} - {None}),
    )


async def columns_holding(sql: Sql, world: World) -> set[tuple[str, str]]:
    """Every column of every table that holds the user's number (E.164, with or without its
    `+`), its blind index (bytes or hex), or the user's id, anywhere in its value."""
    texts = [world.number, world.number[1:], world.index.hex(), world.user]
    blobs = [world.index, world.number.encode()]
    columns = await sql(
        "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c "
        "JOIN information_schema.tables t USING (table_schema, table_name) "
        "WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE' "
        "ORDER BY 1, 2"
    )
    assert len(columns) > 50  # every table, not an empty listing
    found = set()
    params: dict[str, Any]
    for column in columns:
        table, name = column["table_name"], column["column_name"]
        ref = f'"{table}"."{name}"'
        if column["data_type"] == "bytea":
            params = {f"b{i}": blob for i, blob in enumerate(blobs)}
            tests = [f"position(CAST(:{param} AS bytea) IN {ref}) > 0" for param in params]
        else:
            params = {f"t{i}": needle for i, needle in enumerate(texts)}
            tests = [f"strpos(CAST({ref} AS text), :{param}) > 0" for param in params]
        query = f'SELECT 1 FROM "{table}" WHERE {" OR ".join(tests)} LIMIT 1'  # noqa: S608
        if await sql(query, **params):
            found.add((table, name))
    return found


async def assert_erased(
    sql: Sql, settings: Settings, world: World, *, requested_by: str, before: set[tuple[str, str]]
) -> None:
    # The scan sees what was there before: it would see anything left behind.
    assert {
        ("users", "external_id"),
        ("users", "phone_index"),
        ("messages", "to_index"),
        ("messages", "requested_by"),
        ("verifications", "phone_index"),
        ("idempotency_keys", "principal"),
        ("idempotency_keys", "response_body"),
    } | KEPT_FOR_CONSENT <= before

    assert await columns_holding(sql, world) == KEPT_FOR_CONSENT

    uid = world.user_uuid
    assert (
        await sql("SELECT 1 FROM users WHERE id = :id OR external_id = :e", id=uid, e=world.user)
        == []
    )
    for table in ("sms_preferences", "topic_subscriptions", "verifications", "bookings"):
        query = f"SELECT 1 FROM {table} WHERE user_id = :id"  # noqa: S608
        assert await sql(query, id=uid) == [], table
    assert await sql("SELECT 1 FROM messages WHERE user_id = :id", id=uid) == []

    # Their messages stay, anonymous: no user, number, index or body.
    rows = {
        row["id"]: row
        for row in await sql(
            "SELECT id, user_id, to_encrypted, to_index, body, status, category, twilio_sid, "
            "segments, price, price_unit, requested_by FROM messages WHERE id = ANY(:ids)",
            ids=world.message_ids,
        )
    }
    assert len(rows) == len(world.message_ids)
    theirs = [row for row in rows.values() if row["user_id"] != world.other_uuid]
    assert len(theirs) == world.their_messages == 7  # 2 sends, notify, 2 reminders, test, code
    for row in theirs:
        assert (row["user_id"], row["to_encrypted"], row["to_index"], row["body"]) == (
            None,
            None,
            None,
            None,
        )
    # The delivered one is still counted as it was; the queued one never goes out.
    delivered = rows[world.delivered_id]
    assert (delivered["status"], delivered["category"], delivered["twilio_sid"]) == (
        "delivered",
        "transactional",
        world.delivered_sid,
    )
    assert (delivered["segments"], delivered["price"], delivered["price_unit"]) == (
        1,
        Decimal("-0.00790"),
        "USD",
    )
    assert rows[world.queued_id]["status"] == "cancelled"
    events = await sql(
        "SELECT status, source, detail FROM message_events WHERE message_id = :id ORDER BY id",
        id=world.queued_id,
    )
    assert [tuple(event.values()) for event in events][-1] == ("cancelled", "api", "user erased")
    # What they asked for themselves no longer names them.
    assert rows[world.self_test_id]["requested_by"] == "erased-user"
    # The team mate's messages are untouched.
    mates = [row for row in rows.values() if row["user_id"] == world.other_uuid]
    assert len(mates) == 1
    assert mates[0]["to_encrypted"] is not None
    assert "Ada Lovelace" in (mates[0]["body"] or "")

    # The events their messages were rendered from lost their data (names, details).
    notifications = await sql(
        "SELECT id, data FROM notifications WHERE id = ANY(:ids)", ids=world.notification_ids
    )
    assert len(notifications) == 3  # notify, 24 h and 1 h reminders
    assert {row["id"]: row["data"] for row in notifications} == {
        found: {} for found in world.notification_ids
    }

    # Stored answers: the user's own are gone; the service's lost the user's id, number, body.
    keys = {
        row["key"]: row
        for row in await sql(
            "SELECT principal, key, response_body FROM idempotency_keys "
            "WHERE key IN ('erase-send-1', 'erase-notify-1', 'erase-self-test-1') "
            "AND principal IN (:service, :user)",
            service=f"api_key:{world.key_id}",
            user=f"user:{world.user}",
        )
    }
    assert sorted(keys) == ["erase-notify-1", "erase-send-1"]
    sent = keys["erase-send-1"]["response_body"]
    assert (sent["user_id"], sent["to"], sent["body"]) == (None, None, None)
    assert sent["id"] == str(world.queued_id)
    notified = keys["erase-notify-1"]["response_body"]
    assert sorted((item["user_id"] or "") for item in notified["queued"]) == ["", world.other]

    # The opt-out stays, by blind index only.
    assert len(await sql("SELECT 1 FROM suppressions WHERE phone_index = :i", i=world.index)) == 1
    assert len(await sql("SELECT 1 FROM consent_events WHERE phone_index = :i", i=world.index)) == 1

    # The record: a keyed hash of the id, who asked, how many messages.
    [erasure] = await sql(
        "SELECT user_id_hash, requested_by, messages_anonymised, erased_at FROM erasures "
        "WHERE user_id_hash = :hash",
        hash=expected_hash(settings, world.user),
    )
    assert (erasure["requested_by"], erasure["messages_anonymised"]) == (requested_by, 7)
    assert erasure["erased_at"] is not None


# --- through the API -------------------------------------------------------------------------


@pytest.fixture
async def service(make_api_key: MakeKey) -> dict[str, str]:
    return await make_api_key(Scope.USERS_WRITE, Scope.SMS_SEND, name="booking-service")


async def test_erasing_through_the_api_leaves_no_trace_but_the_counts_and_the_opt_out(
    client: httpx.AsyncClient,
    service: dict[str, str],
    session: AsyncSession,
    settings: Settings,
    cipher: PhoneCipher,
    redis_client: redis.asyncio.Redis,
) -> None:
    sql = on_session(session)
    world = await build_world(client, service, sql, cipher)
    before = await columns_holding(sql, world)

    response = await client.delete(f"/api/users/{world.user}", headers=service)

    assert response.status_code == 204, response.text
    await assert_erased(sql, settings, world, requested_by=f"api_key:{world.key_id}", before=before)
    record = await client.get(f"/api/users/{world.user}/erasure", headers=service)
    assert record.status_code == 200, record.text
    answer = record.json()
    assert answer.pop("erased_at")
    assert answer == {
        "user_id": world.user,
        "requested_by": f"api_key:{world.key_id}",
        "messages_anonymised": 7,
    }
    # A retry of the service's idempotent send is still answered, not sent again.
    replay = await client.post(
        "/api/sms/send",
        json=send_request(world.user),
        headers={**service, "Idempotency-Key": "erase-send-1"},
    )
    assert replay.status_code == 202
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert (replay.json()["id"], replay.json()["user_id"]) == (str(world.queued_id), None)


async def test_erasing_twice_or_an_unknown_user_is_404(
    client: httpx.AsyncClient, service: dict[str, str], session: AsyncSession, settings: Settings
) -> None:
    await client.put("/api/users/twice", json={"phone_number": "+14155552671"}, headers=service)
    first = await client.delete("/api/users/twice", headers=service)
    second = await client.delete("/api/users/twice", headers=service)
    unknown = await client.delete("/api/users/nobody-ever", headers=service)

    assert first.status_code == 204
    for response in (second, unknown):
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "user_not_found"
    # Only the erasure that happened is recorded (other tests may commit erasures of their own).
    count = await session.scalar(
        text("SELECT count(*) FROM erasures WHERE user_id_hash = :h"),
        {"h": expected_hash(settings, "twice")},
    )
    assert count == 1
    nobody = await session.scalar(
        text("SELECT count(*) FROM erasures WHERE user_id_hash = :h"),
        {"h": expected_hash(settings, "nobody-ever")},
    )
    assert nobody == 0


async def test_a_user_erasing_themself_is_recorded_as_self_not_by_id(
    client: httpx.AsyncClient,
    service: dict[str, str],
    session: AsyncSession,
    settings: Settings,
) -> None:
    await client.patch(
        "/api/user/profile", json={"phone_number": "+14155552671"}, headers=as_user("zoe")
    )

    response = await client.delete("/api/user/profile", headers=as_user("zoe"))

    assert response.status_code == 204
    rows = (
        await session.execute(
            text(
                "SELECT user_id_hash, requested_by, messages_anonymised FROM erasures "
                "WHERE user_id_hash = :h"
            ),
            {"h": expected_hash(settings, "zoe")},
        )
    ).all()
    assert [tuple(row) for row in rows] == [(expected_hash(settings, "zoe"), "self", 0)]
    record = await client.get("/api/users/zoe/erasure", headers=service)
    assert record.json()["requested_by"] == "self"


async def test_an_admin_erasing_someone_is_recorded_by_their_id(
    client: httpx.AsyncClient, service: dict[str, str], session: AsyncSession, settings: Settings
) -> None:
    await client.put("/api/users/yan", json={}, headers=service)

    response = await client.delete("/api/users/yan", headers=as_user("root", admin=True))

    assert response.status_code == 204
    requested_by = await session.scalar(
        text("SELECT requested_by FROM erasures WHERE user_id_hash = :h"),
        {"h": expected_hash(settings, "yan")},
    )
    assert requested_by == "user:root"


async def test_the_erasure_record_answers_for_an_id_and_only_to_user_managers(
    client: httpx.AsyncClient,
    service: dict[str, str],
    make_api_key: MakeKey,
) -> None:
    await client.put("/api/users/xia", json={}, headers=service)
    never = await client.get("/api/users/xia/erasure", headers=service)
    await client.delete("/api/users/xia", headers=service)
    sender = await make_api_key(Scope.SMS_SEND, name="sender-only")

    found = await client.get("/api/users/xia/erasure", headers=service)
    as_admin = await client.get("/api/users/xia/erasure", headers=as_user("root", admin=True))
    other = await client.get("/api/users/xib/erasure", headers=service)
    forbidden = await client.get("/api/users/xia/erasure", headers=sender)
    as_the_user = await client.get("/api/users/xia/erasure", headers=as_user("xia"))
    anonymous = await client.get("/api/users/xia/erasure")

    assert never.status_code == 404
    assert never.json()["code"] == "erasure_not_found"
    assert found.status_code == as_admin.status_code == 200
    assert found.json()["user_id"] == "xia"
    assert found.json()["messages_anonymised"] == 0
    assert other.status_code == 404
    assert other.json()["code"] == "erasure_not_found"
    assert forbidden.status_code == as_the_user.status_code == 403
    assert forbidden.json()["code"] == "missing_scope"
    assert anonymous.status_code == 401


# --- through the CLI (it commits for real: the rows are removed at the end) -------------------


@asynccontextmanager
async def committed(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Sql]]:
    """The real app on the test database, committing; and SQL on a connection of its own,
    each statement committed."""
    assert settings.database_url is not None
    engine = create_async_engine(
        settings.database_url, poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    application = create_app(settings)
    try:
        async with (
            LifespanManager(application) as running,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=running.app), base_url="http://cli"
            ) as client,
            engine.connect() as connection,
        ):
            yield client, on_connection(connection)
    finally:
        await engine.dispose()


async def committed_key(settings: Settings) -> dict[str, str]:
    engine = create_engine(settings)
    try:
        async with transaction(create_sessionmaker(engine)) as session:
            created = await api_keys.create_key(
                session, "cli-erasure", [Scope.USERS_WRITE, Scope.SMS_SEND]
            )
    finally:
        await engine.dispose()
    return bearer(created.secret)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings: Settings) -> Settings:
    """The CLI's environment: the test servers, nothing from the repository's `.env`."""
    monkeypatch.chdir(tmp_path)
    for name in ("APP_ENV", "PHONE_ENCRYPTION_KEYS", "PHONE_BLIND_INDEX_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert settings.database_url is not None
    assert settings.redis_url is not None
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    return settings


@pytest.fixture
def clean_redis(settings: Settings) -> Iterator[None]:
    """No rate-limit counters of other tests (the verification code counts per IP)."""

    async def flush() -> None:
        assert settings.redis_url is not None
        client = redis.asyncio.Redis.from_url(settings.redis_url)
        await client.flushdb()
        await client.aclose()

    asyncio.run(flush())
    yield
    asyncio.run(flush())


def test_erasing_through_the_cli_leaves_no_trace_but_the_counts_and_the_opt_out(
    cli_env: Settings, cipher: PhoneCipher, clean_redis: None
) -> None:
    settings = cli_env

    async def populate() -> tuple[World, set[tuple[str, str]]]:
        service = await committed_key(settings)
        async with committed(settings) as (client, sql):
            world = await build_world(client, service, sql, cipher)
            return world, await columns_holding(sql, world)

    async def check(world: World, before: set[tuple[str, str]]) -> None:
        async with committed(settings) as (_, sql):
            await assert_erased(sql, settings, world, requested_by="cli", before=before)

    async def clean_up(world: World) -> None:
        async with committed(settings) as (_, sql):
            await sql("DELETE FROM messages WHERE id = ANY(:ids)", ids=world.message_ids)
            await sql("DELETE FROM notifications WHERE id = ANY(:ids)", ids=world.notification_ids)
            await sql(
                "DELETE FROM users WHERE external_id IN (:a, :b)", a=world.user, b=world.other
            )
            await sql(
                "DELETE FROM idempotency_keys WHERE principal IN (:a, :b)",
                a=f"api_key:{world.key_id}",
                b=f"user:{world.user}",
            )
            await sql("DELETE FROM api_keys WHERE id = :id", id=uuid.UUID(world.key_id))
            await sql(
                "DELETE FROM erasures WHERE user_id_hash = :h",
                h=expected_hash(settings, world.user),
            )
            await sql("DELETE FROM suppressions WHERE phone_index = :i", i=world.index)
            await sql("DELETE FROM consent_events WHERE phone_index = :i", i=world.index)

    world, before = asyncio.run(populate())
    try:
        result = CliRunner().invoke(cli, ["users", "erase", world.user], catch_exceptions=False)

        assert result.exit_code == 0, result.output
        assert result.output.strip() == f"erased {world.user}"
        asyncio.run(check(world, before))
        again = CliRunner().invoke(cli, ["users", "erase", world.user], catch_exceptions=False)
        assert again.exit_code != 0
        assert f"no user `{world.user}`" in again.output
    finally:
        asyncio.run(clean_up(world))
