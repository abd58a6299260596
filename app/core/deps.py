"""Request-scoped access to the lifespan state, as `Annotated` dependency aliases.

All are `async def`: FastAPI runs plain `def` dependencies in a thread pool, a thread hop
per dependency per request."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, TypeVar, cast

from arq.connections import ArqRedis
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.crypto import PhoneCipher
from app.core.database import transaction
from app.core.rate_limit import RateLimiter
from app.core.settings import Settings

T = TypeVar("T")


async def provided(request: Request, dependency: Callable[[Request], Awaitable[T]]) -> T:
    """What `Depends(dependency)` gives, for routes that solve no dependencies
    (app/core/routes.py): app.dependency_overrides first, as FastAPI would (tests bind
    sessions to their transaction with them). Such overrides take no parameters."""
    override = request.app.dependency_overrides.get(dependency)
    if override is None:
        return await dependency(request)
    value = override()
    return cast(T, await value if inspect.isawaitable(value) else value)


async def get_settings(request: Request) -> Settings:
    return cast(Settings, request.state.settings)


async def get_sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    return cast(async_sessionmaker[AsyncSession], request.state.sessionmaker)


async def get_session(
    sessionmaker: Annotated[async_sessionmaker[AsyncSession], Depends(get_sessionmaker)],
) -> AsyncIterator[AsyncSession]:
    async with transaction(sessionmaker) as session:
        yield session


async def get_redis(request: Request) -> ArqRedis:
    return cast(ArqRedis, request.state.redis)


async def get_rate_limiter(request: Request) -> RateLimiter:
    return cast(RateLimiter, request.state.rate_limiter)


async def get_phone_cipher(request: Request) -> PhoneCipher:
    return cast(PhoneCipher, request.state.phone_cipher)


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionmakerDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessionmaker)]
# scope="function": the commit runs before the response is sent, so a failed commit is a 500,
# never a success the database does not hold.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
RedisDep = Annotated[ArqRedis, Depends(get_redis)]
PhoneCipherDep = Annotated[PhoneCipher, Depends(get_phone_cipher)]
RateLimiterDep = Annotated[RateLimiter, Depends(get_rate_limiter)]
