"""Redis through arq's pool: jobs are enqueued with it, and it is a plain Redis client too."""

from __future__ import annotations

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from app.core.settings import Settings


class RedisNotConfigured(RuntimeError):
    pass


def redis_settings(settings: Settings) -> RedisSettings:
    if settings.redis_url is None:
        raise RedisNotConfigured(
            "REDIS_URL is not set: export it, or start everything with `make run`"
        )
    return RedisSettings.from_dsn(settings.redis_url)


async def create_redis(settings: Settings) -> ArqRedis:
    return await create_pool(redis_settings(settings))
