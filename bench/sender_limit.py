"""The per-sender rate limit (app/outbox/sender_limit.py) across 2 worker processes, beside
what a team would write without a shared limiter, in one run:

- ours: the shared GCRA schedule in Redis, slots reserved in batches;
- local R/2: each worker paces itself at half the rate with asyncio.sleep (no Redis);
- fixed window: a shared Redis INCR counter per second, waiting for the next second when full.

Each worker process runs many concurrent send loops (acquire, then a simulated Twilio request)
for R = 10 (10 s) and R = 100 (5 s), recording when each send was let go, on Redis' clock.
Printed per limiter and R: the busiest 1-second sliding window against R, the achieved rate as
a share of R, Redis calls per send, each worker's share, and how late sends went against their
slot (ours). SPEC section 10: no 1-second window above R, at least 95% of R achieved.

    .venv/bin/python -m bench.sender_limit [--loops 50] [--seconds-10 10] [--seconds-100 5]

Uses BENCH_REDIS_URL (default: the test server, db 14); only keys of its own, removed after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio

from app.outbox.sender_limit import Reservation, SenderBusy, SenderLimit

SENDER = "+15005550006"
KINDS = ("ours", "local R/2", "fixed window")
WORKERS = 2
# A request to Twilio, after the slot: the send loop is busy this long.
TWILIO_LATENCY_SECONDS = 0.02
# A send refused for a wait over 10 s (SenderBusy) is tried again after this (the outbox's
# retry of the message, SEND_RETRY_BASE_SECONDS).
BUSY_RETRY_SECONDS = 2.0


class _CountingLimit(SenderLimit):
    calls = 0

    async def reserve(self, sender: str, count: int, *, horizon_us: int) -> Reservation:
        self.calls += 1
        return await super().reserve(sender, count, horizon_us=horizon_us)


async def _redis_offset(client: redis.asyncio.Redis) -> float:
    """Redis' clock minus this process' time.time(), from the quickest of a few round trips."""
    best: tuple[float, float] | None = None
    for _ in range(20):
        before = time.time()
        seconds, micros = await client.time()
        after = time.time()
        sample = (after - before, seconds + micros / 1e6 - (before + after) / 2)
        best = sample if best is None or sample[0] < best[0] else best
    assert best is not None
    return best[1]


def _local_pacer(rate: float) -> Callable[[], Awaitable[None]]:
    """Without a shared limiter: this process lets one send go every 1 / rate seconds."""
    lock = asyncio.Lock()
    next_at = 0.0

    async def acquire() -> None:
        nonlocal next_at
        async with lock:
            now = time.monotonic()
            at = max(next_at, now)
            next_at = at + 1 / rate
        await asyncio.sleep(at - now)

    return acquire


def _fixed_window(
    client: redis.asyncio.Redis, key: str, rate: int, offset: float, counter: list[int]
) -> Callable[[], Awaitable[None]]:
    """A shared counter per second of Redis' clock: full, wait for the next second."""

    async def acquire() -> None:
        while True:
            now = time.time() + offset
            second = int(now)
            async with client.pipeline(transaction=True) as pipe:
                pipe.incr(f"{key}:{second}")
                pipe.expire(f"{key}:{second}", 5)
                used, _ = await pipe.execute()
            counter[0] += 1
            if used <= rate:
                return
            await asyncio.sleep(second + 1 - now)

    return acquire


async def _run_worker(
    kind: str, rate: int, start: float, seconds: float, loops: int, redis_url: str, prefix: str
) -> dict[str, Any]:
    client = redis.asyncio.Redis.from_url(redis_url, max_connections=loops + 8)
    offset = await _redis_offset(client)
    calls = [0]
    limit: _CountingLimit | None = None
    if kind == "ours":
        limit = _CountingLimit(client, rate, prefix=prefix)
        ours = limit

        async def acquire() -> float:
            return (await ours.acquire(SENDER, 1)).at

    else:
        pace = (
            _local_pacer(rate / WORKERS)
            if kind == "local R/2"
            else _fixed_window(client, prefix + "window", rate, offset, calls)
        )

        async def acquire() -> float:
            await pace()
            return time.time() + offset

    end = start + seconds
    busy = [0]
    released: list[float] = []
    late: list[float] = []

    async def send_loop() -> None:
        while time.time() + offset < end:
            try:
                slot = await acquire()
            except SenderBusy:  # the outbox retries such a message later; so does this loop
                busy[0] += 1
                await asyncio.sleep(BUSY_RETRY_SECONDS)
                continue
            went = time.time() + offset
            released.append(went)
            late.append(went - slot)
            await asyncio.sleep(TWILIO_LATENCY_SECONDS)

    await asyncio.sleep(max(0.0, start - (time.time() + offset)))
    await asyncio.gather(*(send_loop() for _ in range(loops)))
    await client.aclose()
    return {
        "released": released,
        "late": late,
        "redis_calls": limit.calls if limit is not None else calls[0],
        "busy": busy[0],
    }


def _worker_process(
    kind: str,
    rate: int,
    start: float,
    seconds: float,
    loops: int,
    redis_url: str,
    prefix: str,
    results: multiprocessing.Queue[dict[str, Any]],
) -> None:
    results.put(asyncio.run(_run_worker(kind, rate, start, seconds, loops, redis_url, prefix)))


def busiest_window(times: list[float]) -> int:
    """The most sends in any 1-second window (t - 1 s, t]."""
    ordered = sorted(times)
    best = first = 0
    for last, at in enumerate(ordered):
        while ordered[first] <= at - 1.0:
            first += 1
        best = max(best, last - first + 1)
    return best


@dataclass(frozen=True, slots=True)
class Figures:
    kind: str
    rate: int
    seconds: float
    busiest: int
    achieved: float  # share of R
    calls_per_send: float
    worker_shares: list[float]
    busy: int  # sends refused (a wait over 10 s) and tried again later
    late_p99_ms: float | None  # sends let go after their slot (ours)

    def row(self) -> str:
        shares = "/".join(f"{share:.0%}" for share in self.worker_shares)
        late = "-" if self.late_p99_ms is None else f"{self.late_p99_ms:.1f}"
        return (
            f"{self.rate:>5}  {self.kind:<13} {self.busiest:>7} {self.rate:>4}  "
            f"{self.achieved:>8.1%}  {self.calls_per_send:>10.3f}  {shares:>9}  "
            f"{self.busy:>4}  {late:>11}"
        )


async def _redis_now(redis_url: str) -> float:
    client = redis.asyncio.Redis.from_url(redis_url)
    seconds, micros = await client.time()
    await client.aclose()
    return float(seconds) + float(micros) / 1e6


async def _drop_keys(redis_url: str, prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def run(kind: str, rate: int, seconds: float, loops: int, redis_url: str) -> Figures:
    prefix = f"bench-sender-limit:{uuid.uuid4().hex}:"
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[dict[str, Any]] = context.Queue()
    # The workers start together, on Redis' clock, once both processes are up.
    start = asyncio.run(_redis_now(redis_url)) + 2.0
    processes = [
        context.Process(
            target=_worker_process,
            args=(kind, rate, start, seconds, loops, redis_url, prefix, results),
        )
        for _ in range(WORKERS)
    ]
    for process in processes:
        process.start()
    outputs = [results.get(timeout=seconds + 60) for _ in processes]
    for process in processes:
        process.join()
    asyncio.run(_drop_keys(redis_url, prefix))

    end = start + seconds
    counted = [[at for at in output["released"] if start <= at < end] for output in outputs]
    every = [at for worker in counted for at in worker]
    late = sorted(output_late for output in outputs for output_late in output["late"])
    grants = sum(len(output["released"]) for output in outputs)
    return Figures(
        kind=kind,
        rate=rate,
        seconds=seconds,
        busiest=busiest_window(every),
        achieved=len(every) / (rate * seconds),
        calls_per_send=sum(output["redis_calls"] for output in outputs) / max(1, grants),
        worker_shares=[len(worker) / max(1, len(every)) for worker in counted],
        busy=sum(output["busy"] for output in outputs),
        late_p99_ms=late[int(0.99 * (len(late) - 1))] * 1000 if kind == "ours" and late else None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loops", type=int, default=50, help="send loops per worker process")
    parser.add_argument("--seconds-10", type=float, default=10.0)
    parser.add_argument("--seconds-100", type=float, default=5.0)
    args = parser.parse_args()
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")

    figures = [
        run(kind, rate, seconds, args.loops, redis_url)
        for rate, seconds in ((10, args.seconds_10), (100, args.seconds_100))
        for kind in KINDS
    ]
    print(
        f"{WORKERS} worker processes x {args.loops} send loops; a send holds its loop "
        f"{TWILIO_LATENCY_SECONDS * 1000:.0f} ms after its slot"
    )
    print("    R  limiter       busiest    R  achieved  Redis/send      split  busy  late p99 ms")
    for figure in figures:
        print(figure.row())
    print(
        json.dumps(
            {
                f"R={figure.rate} {figure.kind}": {
                    "busiest_1s_window": figure.busiest,
                    "achieved_share_of_r": round(figure.achieved, 4),
                    "redis_calls_per_send": round(figure.calls_per_send, 4),
                    "worker_shares": [round(share, 3) for share in figure.worker_shares],
                    "busy_refusals": figure.busy,
                    "late_p99_ms": figure.late_p99_ms and round(figure.late_p99_ms, 2),
                }
                for figure in figures
            }
        )
    )


if __name__ == "__main__":
    main()
