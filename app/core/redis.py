"""Redis through arq's pool: jobs are enqueued with it, and it is a plain Redis client too."""

from __future__ import annotations

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.core.settings import Settings


class RedisNotConfigured(RuntimeError):
    pass


# How long a worker rides out a Redis that went away (a restart, a failover): its commands
# are retried with backoff (0.1 s doubling to 2 s) for about half a minute before it gives up.
_RIDE_OUT_RETRIES = 20


def redis_settings(settings: Settings, *, ride_out_outages: bool = False) -> RedisSettings:
    """`ride_out_outages` for the worker: arq's poll loop ends the process at the first
    failed command. The API keeps failing fast: what it cannot queue, the sweeper will."""
    if settings.redis_url is None:
        raise RedisNotConfigured(
            "REDIS_URL is not set: export it, or start everything with `make run`"
        )
    configured = RedisSettings.from_dsn(settings.redis_url)
    if ride_out_outages:
        configured.retry = Retry(ExponentialBackoff(cap=2.0, base=0.1), _RIDE_OUT_RETRIES)
        configured.retry_on_error = [RedisConnectionError, RedisTimeoutError, OSError]
    return configured


async def create_redis(settings: Settings) -> ArqRedis:
    return await create_pool(redis_settings(settings))
