"""A load generator that costs little per request, run in a process of its own.

Requests are written by hand (HTTP/1.1, keep-alive) over asyncio streams on uvloop: an httpx
client spends several times the CPU per request and would measure itself. Two shapes:

- closed loop: `connections` requests in flight, each sent as soon as the one before it was
  answered (saturation: how many the server answers per second);
- open loop: requests start at a fixed arrival rate whatever the answers, and each latency is
  measured from the time the request was meant to start, so a server that falls behind shows
  it (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal


def http_request(
    host: str,
    port: int,
    path: str,
    body: bytes = b"",
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
    *,
    method: str = "POST",
) -> bytes:
    """One request as bytes, sent as is."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    if method != "GET":
        lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class LoadResult:
    requests: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, in the order answered
    statuses: dict[int, int] = field(default_factory=dict)
    client_cpu_seconds: float = 0.0
    # Open loop: the scheduler could not start requests on time (the generator fell behind).
    late_starts: int = 0
    # Open loop: requests never started, the server having fallen `max_backlog` behind.
    abandoned: int = 0

    def count(self, status: int) -> int:
        return self.statuses.get(status, 0)

    @property
    def client_cpu_share(self) -> float:
        return self.client_cpu_seconds / self.seconds if self.seconds else 0.0


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, payload: bytes) -> int:
        self.writer.write(payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        if length:
            await self.reader.readexactly(length)
        return int(lines[0].split(b" ", 2)[1])


async def _connect(host: str, port: int, count: int) -> list[_Connection]:
    pairs = await asyncio.gather(*(asyncio.open_connection(host, port) for _ in range(count)))
    return [_Connection(reader, writer) for reader, writer in pairs]


async def closed_loop(
    host: str, port: int, payloads: Sequence[bytes], connections: int, seconds: float
) -> LoadResult:
    """Each connection sends the next payload as soon as its last was answered, until the
    payloads are used up or `seconds` have passed."""
    result = LoadResult()
    lanes = await _connect(host, port, connections)
    cursor = iter(payloads)
    clock = time.perf_counter
    began, cpu = clock(), time.process_time()
    deadline = began + seconds

    async def lane(connection: _Connection) -> None:
        for payload in cursor:
            started = clock()
            status = await connection.exchange(payload)
            ended = clock()
            result.latencies.append(ended - started)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if ended >= deadline:
                return

    await asyncio.gather(*(lane(connection) for connection in lanes))
    result.seconds, result.client_cpu_seconds = clock() - began, time.process_time() - cpu
    result.requests = len(result.latencies)
    for connection in lanes:
        connection.writer.close()
    return result


async def open_loop(
    host: str,
    port: int,
    payloads: Sequence[bytes],
    rate: float,
    connections: int,
    max_backlog_seconds: float = 2.0,
) -> LoadResult:
    """Payload i starts at i / rate seconds on a free connection; its latency counts from
    then, including any wait for a free connection. Once more than `max_backlog_seconds` of
    arrivals are waiting unanswered, the server cannot keep up: the rest are abandoned (and
    counted) rather than drained for minutes."""
    result = LoadResult()
    free: asyncio.Queue[_Connection] = asyncio.Queue()
    for connection in await _connect(host, port, connections):
        free.put_nowait(connection)
    loop = asyncio.get_running_loop()
    clock = time.perf_counter
    began, cpu = clock(), time.process_time()

    async def one(intended: float, payload: bytes) -> None:
        connection = await free.get()
        try:
            status = await connection.exchange(payload)
        finally:
            free.put_nowait(connection)
        result.latencies.append(clock() - intended)
        result.statuses[status] = result.statuses.get(status, 0) + 1

    tasks = []
    max_backlog = max(1, int(rate * max_backlog_seconds))
    for index, payload in enumerate(payloads):
        if index - len(result.latencies) > max_backlog:
            result.abandoned = len(payloads) - index
            break
        intended = began + index / rate
        delay = intended - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.005:
            result.late_starts += 1
        tasks.append(loop.create_task(one(intended, payload)))
    await asyncio.gather(*tasks)
    result.seconds, result.client_cpu_seconds = clock() - began, time.process_time() - cpu
    result.requests = len(result.latencies)
    while not free.empty():
        free.get_nowait().writer.close()
    return result


Shape = Literal["closed", "open"]


@dataclass(frozen=True, slots=True)
class LoadPlan:
    shape: Shape
    host: str
    port: int
    payloads: Sequence[bytes]
    connections: int
    seconds: float = 0.0  # closed loop: at most this long
    rate: float = 0.0  # open loop: requests per second


def _run(plan: LoadPlan, results: multiprocessing.Queue[LoadResult]) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        pass
    if plan.shape == "closed":
        work = closed_loop(plan.host, plan.port, plan.payloads, plan.connections, plan.seconds)
    else:
        work = open_loop(plan.host, plan.port, plan.payloads, plan.rate, plan.connections)
    results.put(asyncio.run(work))


def run_load(plan: LoadPlan, timeout: float = 600.0) -> LoadResult:
    """The plan, run in a process of its own (its CPU is then its own, not the caller's)."""
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[LoadResult] = context.Queue()
    process = context.Process(target=_run, args=(plan, results))
    process.start()
    try:
        return results.get(timeout=timeout)
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()


def percentile(values: Sequence[float], share: float, *, never: int = 0) -> float | None:
    """`never`: requests never answered (abandoned), counted as slower than any answered."""
    if not values:
        return None
    ordered = sorted(values) + [float("inf")] * never
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]
