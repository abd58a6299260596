"""The fixed-window limiter against a real Redis: what it lets through, what it refuses and for
how long, and that its counting holds when many processes hit it at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from app.core.rate_limit import Limit, RateLimiter

PREFIX = "test-rate-limit:"


@pytest.fixture
def limiter(redis_client: redis.asyncio.Redis) -> RateLimiter:
    return RateLimiter(redis_client, prefix=PREFIX)


async def counter(redis_client: redis.asyncio.Redis, key: str) -> int:
    value = await redis_client.get(PREFIX + key)
    return int(value) if value is not None else 0


async def test_hits_within_the_limit_are_allowed_and_counted(
    limiter: RateLimiter, redis_client: redis.asyncio.Redis
) -> None:
    limit = Limit("within", 3, 60)

    verdicts = [await limiter.hit([limit]) for _ in range(3)]

    assert [verdict.allowed for verdict in verdicts] == [True, True, True]
    assert await counter(redis_client, "within") == 3
    # The window is the limit's own, started by the first hit.
    ttl_ms = await redis_client.pttl(PREFIX + "within")
    assert 55_000 < ttl_ms <= 60_000


async def test_a_hit_past_the_limit_is_refused_with_a_retry_after_within_the_window(
    limiter: RateLimiter, redis_client: redis.asyncio.Redis
) -> None:
    limit = Limit("past", 2, 45)
    assert (await limiter.hit([limit])).allowed
    assert (await limiter.hit([limit])).allowed

    refused = [await limiter.hit([limit]) for _ in range(3)]

    assert [verdict.allowed for verdict in refused] == [False, False, False]
    for verdict in refused:
        assert 1 <= verdict.retry_after_seconds <= 45
        assert verdict.retry_after_seconds >= 40  # the window has barely begun
    # Refused hits are not counted: the wait does not grow with every retry.
    assert await counter(redis_client, "past") == 2
    assert 40_000 < await redis_client.pttl(PREFIX + "past") <= 45_000


async def test_a_refused_hit_counts_against_none_of_the_limits_it_checked(
    limiter: RateLimiter, redis_client: redis.asyncio.Redis
) -> None:
    tight = Limit("tight", 1, 60)
    roomy = Limit("roomy", 5, 60)
    assert (await limiter.hit([roomy, tight])).allowed  # both counted: 1 of 1, 1 of 5

    for _ in range(10):
        verdict = await limiter.hit([roomy, tight])
        assert not verdict.allowed

    assert await counter(redis_client, "tight") == 1
    assert await counter(redis_client, "roomy") == 1
    # The roomy limit kept its budget: four more on its own, then it refuses.
    alone = [(await limiter.hit([roomy])).allowed for _ in range(5)]
    assert alone == [True, True, True, True, False]


async def test_the_wait_is_that_of_the_longest_broken_window(
    limiter: RateLimiter, redis_client: redis.asyncio.Redis
) -> None:
    short = Limit("short", 1, 10)
    long = Limit("long", 1, 300)
    roomy = Limit("roomy-too", 100, 3600)  # not broken: its long window is not the wait
    assert (await limiter.hit([short, long, roomy])).allowed

    verdict = await limiter.hit([short, long, roomy])

    assert not verdict.allowed
    assert 290 <= verdict.retry_after_seconds <= 300


async def test_a_window_runs_out_and_the_limit_allows_again(
    limiter: RateLimiter, redis_client: redis.asyncio.Redis
) -> None:
    limit = Limit("expires", 2, 1)
    assert (await limiter.hit([limit])).allowed
    assert (await limiter.hit([limit])).allowed
    refused = await limiter.hit([limit])
    assert not refused.allowed
    assert refused.retry_after_seconds == 1

    started = time.monotonic()
    while not (await limiter.hit([limit])).allowed:
        assert time.monotonic() - started < 3, "the 1 s window never ran out"
        await asyncio.sleep(0.05)

    assert time.monotonic() - started <= 1.5
    # A fresh window: the one hit that got through is all it holds.
    assert await counter(redis_client, "expires") == 1


async def test_a_limit_of_zero_allows_nothing(limiter: RateLimiter) -> None:
    verdict = await limiter.hit([Limit("closed", 0, 30), Limit("open", 10, 30)])

    assert not verdict.allowed
    assert 1 <= verdict.retry_after_seconds <= 30


async def test_a_counter_that_lost_its_expiry_still_refuses_and_does_not_stay_stuck(
    limiter: RateLimiter, redis_client: redis.asyncio.Redis
) -> None:
    # E.g. restored from a backup or written by hand: full, and without a TTL.
    await redis_client.set(PREFIX + "stuck", 3)

    verdict = await limiter.hit([Limit("stuck", 3, 20)])

    assert not verdict.allowed
    assert 1 <= verdict.retry_after_seconds <= 20
    assert 0 < await redis_client.pttl(PREFIX + "stuck") <= 20_000  # it will reset


@pytest.fixture
async def processes(redis_url: str) -> AsyncIterator[list[RateLimiter]]:
    """Five limiters on connections of their own, as five API processes have."""
    clients = [redis.asyncio.Redis.from_url(redis_url) for _ in range(5)]
    yield [RateLimiter(client, prefix=PREFIX) for client in clients]
    for client in clients:
        await client.aclose()


async def test_concurrent_hits_from_several_processes_let_exactly_the_limit_through(
    redis_client: redis.asyncio.Redis, processes: list[RateLimiter]
) -> None:
    for round_ in range(3):
        limits = [Limit(f"burst-{round_}", 10, 60), Limit(f"burst-{round_}-wide", 1000, 60)]

        verdicts = await asyncio.gather(
            *(processes[n % len(processes)].hit(limits) for n in range(50))
        )

        assert sum(verdict.allowed for verdict in verdicts) == 10
        assert all(1 <= v.retry_after_seconds <= 60 for v in verdicts if not v.allowed)
        assert await counter(redis_client, f"burst-{round_}") == 10
        assert await counter(redis_client, f"burst-{round_}-wide") == 10
