"""Every long-lived resource, built once per process (API lifespan or worker startup)."""

from __future__ import annotations

from typing import TypedDict

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.auth.api_keys import VerifiedKeys
from app.auth.tokens import TokenVerifier
from app.core.crypto import PhoneCipher
from app.core.database import create_engine, create_sessionmaker
from app.core.rate_limit import RateLimiter
from app.core.redis import create_redis
from app.core.settings import Settings
from app.delivery_status.batching import StatusBatchers
from app.twilio.client import TwilioClient


class State(TypedDict):
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: ArqRedis
    phone_cipher: PhoneCipher
    token_verifier: TokenVerifier
    api_keys: VerifiedKeys
    twilio: TwilioClient
    rate_limiter: RateLimiter
    status_batchers: StatusBatchers


async def open_state(settings: Settings) -> State:
    engine = create_engine(settings)
    try:
        redis = await create_redis(settings)
    except BaseException:
        await engine.dispose()
        raise
    return State(
        settings=settings,
        engine=engine,
        sessionmaker=create_sessionmaker(engine),
        redis=redis,
        phone_cipher=PhoneCipher(
            settings.phone_keys, settings.phone_blind_index_key.get_secret_value().encode()
        ),
        token_verifier=TokenVerifier(settings),
        api_keys=VerifiedKeys(settings.api_key_cache_seconds),
        rate_limiter=RateLimiter(redis),
        status_batchers=StatusBatchers(),
        twilio=TwilioClient(
            settings.twilio,
            timeout_seconds=settings.twilio_timeout_seconds,
            max_connections=settings.twilio_max_connections,
        ),
    )


async def close_state(state: State) -> None:
    try:
        await state["status_batchers"].aclose()
        await state["twilio"].aclose()
        await state["redis"].aclose()
    finally:
        await state["engine"].dispose()
