"""Bulk campaigns end to end through real processes, beside the sandbox's own capacity, in one
run (issue 6, SPEC section 10):

1. A campaign of `--recipients` numbers (default 100,000) with no sender limit
   (SENDER_SEGMENTS_PER_SECOND=0): how long the API takes to accept it, the rate at which the
   sandbox accepted its messages (between its first and last `date_created`, and from the POST
   to the last one), whether every message ended final, and duplicates (the sandbox's
   messages counted per number). Baseline: the sandbox's raw capacity, `--raw-creates` creates
   sent straight to it, `--raw-concurrency` at a time over keep-alive connections, from a
   process of its own (no StatusCallback: the create path alone), and the ratio. Target:
   1,000+ messages/s. The client writes its requests by hand: an async httpx client (also
   run, `--httpx-creates`, and printed) spends more CPU per request than the sandbox does and
   would measure itself. Each client's and the sandbox's CPU are printed beside the rate: the
   one near 100% was the limit.
2. Each worker's peak RSS during a campaign of `--memory-small` (default 10,000) recipients
   and during the big one (fresh workers for each, sampled every 100 ms), and the ratio.
   Target: flat within 10%.
3. For R = 10 and 100 segments/s across 2 workers (restarted with SENDER_SEGMENTS_PER_SECOND=R
   and an empty Redis): a campaign of R x `--limit-seconds` one-segment messages. From the
   times the sandbox recorded each create (`date_created`, microseconds, in its
   `/sandbox/messages` listing): the busiest 1-second sliding window, in segments, beside R,
   and the achieved rate as a share of R over the steady part (the middle 80% of the
   segments; first to last create beside it). Target: no window above R, at least 95% of R.

Processes, as `tests/stack.py` starts them: the Twilio sandbox as its own server (status
callbacks on, `--callback-delay` between statuses), the API under uvicorn as in production (one
process, no reload, log level WARNING, no access log, the default Twilio timeout and retry
settings), and 2 arq workers; quiet hours off (QUIET_HOURS_START = QUIET_HOURS_END), so a run
at night is not held for the recipients' morning. The numbers are distinct US numbers across
hundreds of area codes and exchanges, each one accepted by `normalize_sms_number` as a US
mobile-capable number.

    .venv/bin/python -m bench.bulk [--recipients 100000] [--memory-small 10000]
        [--timeout 300] [--small-timeout 120] [--settle 180] [--limit-seconds 10]
        [--raw-creates 10000] [--raw-concurrency 64] [--httpx-creates 3000]
        [--callback-delay 0.05] [--progress-every 10] [--json bench/results/bulk.json]
        [--logs DIR]

`--timeout` (the big campaign) and `--small-timeout` cap how long a campaign may send, from its
POST: one still sending then is cancelled, and its figures are those of what the sandbox had
received, marked partial. `--settle` caps the wait for the last status callbacks once
everything was handed over: a message still `sent` (or `sending`) then counts as not final.
Progress is printed every `--progress-every` seconds. It prints one table and one JSON line,
and writes the JSON to `--json`.

Uses BENCH_DATABASE_URL / BENCH_REDIS_URL (default: the test servers): a database of its own,
dropped at the end; the Redis database given (default db 14) is flushed at the start, between
phases and at the end. Processes' logs go to `--logs` (default: a temporary directory, removed
unless the run failed).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psutil  # type: ignore[import-untyped]
import redis

from app.auth.principal import Scope
from app.core.phone import InvalidPhoneNumber, NumberType, normalize_sms_number
from app.core.settings import (
    SANDBOX_ACCOUNT_SID,
    SANDBOX_AUTH_TOKEN,
    SANDBOX_FROM_NUMBER,
    Settings,
)
from bench.sender_limit import busiest_window
from bench.support import bench_servers
from tests.stack import Stack, create_api_key

WORKERS = 2
RATES = (10, 100)
# One GSM-7 segment; the label tells the phases' messages apart at the sandbox.
BODY = "Spring sale: 20% off everything this week. Reply STOP to opt out. ({label})"
PENDING = ("queued", "scheduled", "sending", "sent")  # not final yet
AT_TWILIO = ("sent", "delivered", "undelivered")
MOBILE_CAPABLE = frozenset({NumberType.MOBILE, NumberType.FIXED_LINE_OR_MOBILE})
SAMPLE_SECONDS = 0.1  # RSS sampling interval
POLL_SECONDS = 1.0  # campaign progress polling interval
MB = 1024 * 1024


# --- recipients ------------------------------------------------------------------------------


def _mobile_capable_us(number: str) -> bool:
    try:
        check = normalize_sms_number(number, None, "US")
    except InvalidPhoneNumber:
        return False
    return check.region == "US" and check.number_type in MOBILE_CAPABLE


def us_numbers(count: int) -> list[str]:
    """`count` distinct US numbers that can take SMS, spread over every area code
    libphonenumber knows for the US (an exchange in each, then the next exchange, …)."""
    area_codes = [npa for npa in range(201, 990) if _mobile_capable_us(f"+1{npa}2345678")]
    exchanges = [nxx for nxx in range(200, 1000) if nxx % 100 != 11 and nxx != 555]
    numbers: list[str] = []
    for line in range(1234, 10_000, 1111):  # a pass over every exchange per line number
        for nxx in exchanges:
            for npa in area_codes:
                number = f"+1{npa}{nxx}{line:04d}"
                if _mobile_capable_us(number):
                    numbers.append(number)
                    if len(numbers) == count:
                        return numbers
    raise ValueError(f"only {len(numbers)} numbers found")


# --- processes -------------------------------------------------------------------------------


def create_bulk_key(database_url: str) -> str:
    """A service key for campaigns, made straight in the benchmark's database."""
    return create_api_key(
        database_url, "bench-bulk", [Scope.SMS_BULK, Scope.SMS_READ, Scope.USERS_WRITE]
    )


def production_env() -> dict[str, str]:
    """tests/stack.py shortens timeouts and retries for its fault storms; a benchmark runs
    with the service's defaults, quiet hours off."""
    defaults = Settings.model_fields
    return {
        "LOG_LEVEL": "WARNING",
        "QUIET_HOURS_START": "00:00",
        "QUIET_HOURS_END": "00:00",
        **{
            name.upper(): str(defaults[name].default)
            for name in (
                "twilio_timeout_seconds",
                "send_retry_base_seconds",
                "send_retry_cap_seconds",
                "send_reconcile_window_seconds",
            )
        },
    }


@dataclass
class Rig:
    """The stack's processes, started afresh for each phase: a new sandbox (nothing stored,
    no callback of an earlier phase in flight), and new workers with the phase's sender limit
    on an empty Redis."""

    stack: Stack
    redis_url: str
    callback_delay: float
    names: list[str] = field(default_factory=list)
    generation: int = 0

    def fresh_sandbox(self) -> None:
        self.stack.stop("sandbox")
        self.stack.start_sandbox(callback_delay=self.callback_delay)

    def restart_workers(self, segments_per_second: int) -> None:
        for name in self.names:
            self.stack.stop(name)
        redis.Redis.from_url(self.redis_url).flushdb()
        self.stack.extra_env["SENDER_SEGMENTS_PER_SECOND"] = str(segments_per_second)
        self.generation += 1
        self.names = [f"worker-{n}.{self.generation}" for n in range(1, WORKERS + 1)]
        for name in self.names:
            # The stack waits for "Starting worker" in the name's log: no earlier run's.
            (self.stack.log_dir / f"{name}.log").unlink(missing_ok=True)
            self.stack.start_worker(name)

    def pids(self) -> dict[str, int]:
        return {
            f"worker-{n}": self.stack.processes[name].pid
            for n, name in enumerate(self.names, start=1)
        }


class ProcessSampler:
    """Each process' RSS every SAMPLE_SECONDS, in a thread (the peak per process), and the CPU
    it spent while sampled (as a share of one core)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.idle: dict[str, int] = {name: self._rss(name) for name in self.processes}
        self.peaks: dict[str, int] = dict(self.idle)
        self.cpu_share: dict[str, float] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._cpu = {name: _cpu_seconds(process) for name, process in self.processes.items()}
        self._began = time.perf_counter()

    def _rss(self, name: str) -> int:
        try:
            rss: int = self.processes[name].memory_info().rss
        except psutil.Error:
            return 0
        return rss

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            for name in self.processes:
                self.peaks[name] = max(self.peaks[name], self._rss(name))
            self.samples += 1

    def __enter__(self) -> ProcessSampler:
        self._began, self._began_epoch = time.perf_counter(), time.time()
        self._cpu = {name: _cpu_seconds(process) for name, process in self.processes.items()}
        self._postgres = {process.pid: _cpu_seconds(process) for process in _local_postgres()}
        self._machine = _machine_busy_seconds()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        wall = time.perf_counter() - self._began
        self.cpu_share = {
            name: (_cpu_seconds(process) - self._cpu[name]) / wall
            for name, process in self.processes.items()
        }
        if self._postgres:  # a server on this machine: its processes, backends born since too
            spent = 0.0
            for process in _local_postgres():
                if process.pid in self._postgres:
                    spent += _cpu_seconds(process) - self._postgres[process.pid]
                elif process.create_time() >= self._began_epoch:
                    spent += _cpu_seconds(process)
            self.cpu_share["postgres"] = spent / wall
        # The rest of the machine's busy CPU: the bench itself and anything else running.
        machine = (_machine_busy_seconds() - self._machine) / wall
        self.cpu_share["everything else"] = max(0.0, machine - sum(self.cpu_share.values()))


def _machine_busy_seconds() -> float:
    times = psutil.cpu_times()
    busy = ("user", "nice", "system", "irq", "softirq", "steal")  # guest time is in user's
    return float(sum(getattr(times, name, 0.0) for name in busy))


def _local_postgres() -> list[psutil.Process]:
    """PostgreSQL's processes on this machine, if it runs here (backends of every database)."""
    found: list[psutil.Process] = []
    for process in psutil.process_iter(["name"]):
        if process.info["name"] in ("postgres", "postmaster"):
            found.append(process)
    return found


def _cpu_seconds(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


# --- the sandbox's raw capacity --------------------------------------------------------------

RawFigures = dict[str, float | int | str]
MESSAGES_PATH = f"/2010-04-01/Accounts/{SANDBOX_ACCOUNT_SID}/Messages.json"


def _create_form(number: str) -> dict[str, str]:
    return {"To": number, "From": SANDBOX_FROM_NUMBER, "Body": BODY.format(label="raw")}


async def _lean_lane(port: int, numbers: Sequence[str]) -> int:
    """One keep-alive connection, one create at a time, requests written by hand: a client
    that costs a fraction of the sandbox's work per request. Returns the failures."""
    token = base64.b64encode(f"{SANDBOX_ACCOUNT_SID}:{SANDBOX_AUTH_TOKEN}".encode()).decode()
    head = (
        f"POST {MESSAGES_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Basic {token}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    failures = 0
    try:
        for number in numbers:
            form = urlencode(_create_form(number)).encode()
            writer.write(f"{head}Content-Length: {len(form)}\r\n\r\n".encode() + form)
            answer = await reader.readuntil(b"\r\n\r\n")
            lines = answer.split(b"\r\n")
            length = next(
                int(line.partition(b":")[2])
                for line in lines
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            failures += lines[0].split(b" ", 2)[1] != b"201"
    finally:
        writer.close()
    return failures


async def _drive_sandbox(
    client: str, base_url: str, sandbox_pid: int, numbers: list[str], concurrency: int
) -> RawFigures:
    """`concurrency` creates at a time, each lane one after the other, until `numbers` are
    all sent; the CPU the client and the sandbox spent meanwhile, as shares of the time."""
    port = int(base_url.rpartition(":")[2])
    lanes = [numbers[lane::concurrency] for lane in range(concurrency)]
    sandbox = psutil.Process(sandbox_pid)
    async with httpx.AsyncClient(
        base_url=base_url,
        auth=(SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN),
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        timeout=60,
    ) as http:

        async def httpx_lane(batch: Sequence[str]) -> int:
            failures = 0
            for number in batch:
                response = await http.post(MESSAGES_PATH, data=_create_form(number))
                failures += response.status_code != 201
            return failures

        async def lane(batch: Sequence[str]) -> int:
            return await (_lean_lane(port, batch) if client == "lean" else httpx_lane(batch))

        warm_up = [[f"+1500555{n:04d}" for n in range(100, 103)]] * concurrency
        await asyncio.gather(*(lane(batch) for batch in warm_up))  # connections, imports
        cpu, sandbox_cpu, wall = time.process_time(), _cpu_seconds(sandbox), time.perf_counter()
        failures = sum(await asyncio.gather(*(lane(batch) for batch in lanes)))
        wall = time.perf_counter() - wall
        cpu, sandbox_cpu = time.process_time() - cpu, _cpu_seconds(sandbox) - sandbox_cpu
    return {
        "client": client,
        "creates": len(numbers),
        "concurrency": concurrency,
        "seconds": wall,
        "creates_per_second": len(numbers) / wall,
        # Near 1.0: that process was the limit (one core each).
        "client_cpu_share": cpu / wall,
        "sandbox_cpu_share": sandbox_cpu / wall,
        "failures": failures,
    }


def _raw_client_process(
    client: str,
    base_url: str,
    sandbox_pid: int,
    numbers: list[str],
    concurrency: int,
    results: multiprocessing.Queue[RawFigures],
) -> None:
    results.put(asyncio.run(_drive_sandbox(client, base_url, sandbox_pid, numbers, concurrency)))


def sandbox_raw_capacity(rig: Rig, client: str, numbers: list[str], concurrency: int) -> RawFigures:
    """Creates sent straight to a fresh sandbox from a process of their own, without
    StatusCallback (the create path alone)."""
    rig.fresh_sandbox()
    stack = rig.stack
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[RawFigures] = context.Queue()
    sandbox_pid = stack.processes["sandbox"].pid
    process = context.Process(
        target=_raw_client_process,
        args=(client, stack.sandbox, sandbox_pid, numbers, concurrency, results),
    )
    process.start()
    try:
        figures = results.get(timeout=600)
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()
    return figures


# --- campaigns -------------------------------------------------------------------------------


@dataclass
class CampaignFigures:
    label: str
    recipients: int
    segments_per_second: int
    accept_seconds: float
    at_sandbox: int  # the campaign's messages the sandbox accepted
    others_at_sandbox: int  # messages of no campaign of this phase (strays from before)
    rate_first_to_last: float | None  # messages/s between the first and last date_created
    rate_from_post: float | None  # messages/s from the POST to the last date_created
    seconds_to_last_create: float | None  # from the POST
    seconds_to_hand_over: float | None  # from the POST until nothing was left to hand over
    seconds_to_final: float | None  # from the POST until every message was final (polled)
    all_final: bool
    not_final: int  # messages still queued, sending or sent (waiting for a callback) at the end
    timed_out: bool
    counts: dict[str, int]  # the campaign's counts at the end
    duplicates: int  # messages beyond the first to a number, at the sandbox
    missing: int  # numbers of the campaign the sandbox never got
    worker_idle_rss_mb: dict[str, float]
    worker_peak_rss_mb: dict[str, float]
    api_peak_rss_mb: float
    rss_samples: int
    cpu_share: dict[str, float]  # CPU each process spent from the POST to the end, of one core
    busiest_1s_segments: int | None = None
    # Segments per second over the middle 80% of the segments (the first and last 10% are the
    # ramp-up and the tail), as a share of R; and over the whole span, first to last.
    achieved_share_of_r: float | None = None
    whole_span_share_of_r: float | None = None


def _epoch(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def sandbox_messages(stack: Stack) -> list[dict[str, Any]]:
    response = httpx.get(f"{stack.sandbox}/sandbox/messages", timeout=300)
    response.raise_for_status()
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def _progress_line(label: str, elapsed: float, counts: dict[str, int], rate: float) -> str:
    at_twilio = sum(counts.get(status, 0) for status in AT_TWILIO)
    return (
        f"  [{label}] {elapsed:6.1f} s: at the sandbox {at_twilio:,} ({rate:,.0f}/s lately), "
        f"delivered {counts.get('delivered', 0):,}, queued {counts.get('queued', 0):,}, "
        f"sending {counts.get('sending', 0):,}, sent {counts.get('sent', 0):,}, "
        f"failed {counts.get('failed', 0):,}"
    )


def run_campaign(
    stack: Stack,
    api: httpx.Client,
    rig: Rig,
    numbers: list[str],
    *,
    label: str,
    segments_per_second: int,
    timeout: float,
    progress_every: float,
    settle: float,
) -> CampaignFigures:
    """Fresh workers and sandbox, one campaign to `numbers`, waited for until every
    message is final: at most `timeout` from the POST until nothing is left to hand to Twilio
    (else the rest is cancelled, and the figures are partial), then at most `settle` more for
    the status callbacks of what was handed over."""
    rig.restart_workers(segments_per_second)
    rig.fresh_sandbox()
    body = BODY.format(label=label)
    pids = {
        **rig.pids(),
        "api": stack.processes["api"].pid,
        "sandbox": stack.processes["sandbox"].pid,
    }
    print(f"  [{label}] {len(numbers):,} recipients, R = {segments_per_second or 'unlimited'}")
    with ProcessSampler(pids) as sampler:
        posted_at = time.time()
        started = time.perf_counter()
        response = api.post(
            "/api/sms/bulk-send",
            json={"body": body, "recipients": {"numbers": numbers}},
            timeout=600,
        )
        accept_seconds = time.perf_counter() - started
        if response.status_code != 202:
            raise RuntimeError(f"bulk-send answered {response.status_code}: {response.text}")
        campaign = response.json()
        campaign_id = campaign["id"]
        estimate = campaign["estimate"]
        if estimate["recipients"] != len(numbers):
            print(f"  [{label}] warning: {estimate['recipients']:,} to send: {estimate}")
        print(f"  [{label}] accepted in {accept_seconds:.2f} s")

        counts: dict[str, int] = {}
        timed_out = all_final = False
        seconds_to_final: float | None = None
        handed_over: float | None = None  # nothing left to hand to Twilio since (from the POST)
        last_line = last_at_twilio_time = time.perf_counter()
        last_at_twilio = 0
        while True:
            time.sleep(POLL_SECONDS)
            answer = api.get(f"/api/sms/bulk/{campaign_id}").json()
            counts = answer["counts"]
            now, elapsed = time.perf_counter(), time.time() - posted_at
            if not any(counts[status] for status in PENDING):
                all_final = not timed_out
                seconds_to_final = elapsed if all_final else None
                break
            if handed_over is None and answer["status"] in ("completed", "cancelled"):
                handed_over = elapsed
            if now - last_line >= progress_every:
                at_twilio = sum(counts[status] for status in AT_TWILIO)
                rate = (at_twilio - last_at_twilio) / (now - last_at_twilio_time)
                print(_progress_line(label, elapsed, counts, rate), flush=True)
                last_line = last_at_twilio_time = now
                last_at_twilio = at_twilio
            if handed_over is not None and elapsed - handed_over > settle:
                print(f"  [{label}] still not final {settle:.0f} s after the last hand-over")
                break
            if handed_over is None and elapsed > timeout:
                print(f"  [{label}] still sending after {timeout:.0f} s: cancelling the rest")
                cancelled = api.post(f"/api/sms/bulk/{campaign_id}/cancel")
                if cancelled.status_code not in (200, 409):  # 409: it completed meanwhile
                    cancelled.raise_for_status()
                timed_out = True
                handed_over = elapsed  # what was handed over settles for `settle` seconds

    listed = sandbox_messages(stack)
    ours = [message for message in listed if message["body"] == body]
    created = sorted(_epoch(message["date_created"]) for message in ours)
    per_number = Counter(message["to"] for message in ours)
    figures = CampaignFigures(
        label=label,
        recipients=len(numbers),
        segments_per_second=segments_per_second,
        accept_seconds=accept_seconds,
        at_sandbox=len(ours),
        others_at_sandbox=len(listed) - len(ours),
        rate_first_to_last=(
            (len(created) - 1) / (created[-1] - created[0]) if len(created) > 1 else None
        ),
        rate_from_post=len(created) / (created[-1] - posted_at) if created else None,
        seconds_to_last_create=created[-1] - posted_at if created else None,
        seconds_to_hand_over=handed_over,
        seconds_to_final=seconds_to_final,
        all_final=all_final,
        not_final=sum(counts.get(status, 0) for status in PENDING),
        timed_out=timed_out,
        counts=counts,
        duplicates=sum(count - 1 for count in per_number.values()),
        missing=len(set(numbers) - set(per_number)),
        worker_idle_rss_mb={name: sampler.idle[name] / MB for name in rig.pids()},
        worker_peak_rss_mb={name: sampler.peaks[name] / MB for name in rig.pids()},
        api_peak_rss_mb=sampler.peaks["api"] / MB,
        rss_samples=sampler.samples,
        cpu_share=sampler.cpu_share,
    )
    if segments_per_second:
        # Every message the sandbox got counts against the sender, strays too.
        every = sorted(
            _epoch(message["date_created"])
            for message in listed
            for _ in range(int(message["num_segments"]))
        )
        figures.busiest_1s_segments = busiest_window(every)
        low, high = len(every) // 10, len(every) - 1 - len(every) // 10
        if high > low and every[high] > every[low]:
            steady = (high - low) / (every[high] - every[low])
            figures.achieved_share_of_r = steady / segments_per_second
            whole = (len(every) - 1) / (every[-1] - every[0])
            figures.whole_span_share_of_r = whole / segments_per_second
    print(
        f"  [{label}] done: {figures.at_sandbox:,} at the sandbox"
        + (f", {figures.rate_first_to_last:,.1f}/s" if figures.rate_first_to_last else "")
        + (", all final" if all_final else ", NOT all final")
        + (f" in {seconds_to_final:.1f} s" if seconds_to_final else ""),
        flush=True,
    )
    return figures


# --- report ----------------------------------------------------------------------------------


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}/s"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} s"


def _final(figure: CampaignFigures) -> str:
    if figure.all_final:
        return f"all final {_seconds(figure.seconds_to_final)} after the POST"
    return f"NOT all final: {figure.not_final:,} still queued/sending/sent"


def _row(figure: str, value: str, beside: str = "") -> None:
    print(f"  {figure:<42}{value:>20}  {beside}")


def _cpu(figure: CampaignFigures) -> str:
    return ", ".join(f"{name} {share:.0%}" for name, share in figure.cpu_share.items())


def report(
    raw: RawFigures,
    raw_httpx: RawFigures,
    small: CampaignFigures,
    big: CampaignFigures,
    limited: list[CampaignFigures],
    total_seconds: float,
) -> dict[str, Any]:
    raw_rate = float(raw["creates_per_second"])
    ratio = (big.rate_first_to_last or 0) / raw_rate
    partial = " - PARTIAL: cut at --timeout, the rest cancelled" if big.timed_out else ""
    print()
    print(f"Bulk campaign, {WORKERS} workers, no sender limit{partial}")
    _row("figure", "value", "beside it")
    _row("recipients", f"{big.recipients:,}")
    _row("API accepts POST /api/sms/bulk-send", _seconds(big.accept_seconds))
    _row(
        "into the sandbox, first -> last create",
        _rate(big.rate_first_to_last),
        f"sandbox raw capacity {raw_rate:,.0f}/s: ratio {ratio:.2f}; target >= 1,000/s",
    )
    _row(
        "into the sandbox, POST -> last create",
        _rate(big.rate_from_post),
        f"last create {_seconds(big.seconds_to_last_create)} after the POST",
    )
    _row(
        "messages at the sandbox",
        f"{big.at_sandbox:,}",
        f"of {big.recipients:,}: never sent {big.missing:,} (cancelled "
        f"{big.counts.get('cancelled', 0):,}), duplicates {big.duplicates:,}",
    )
    _row("delivered (campaign counts)", f"{big.counts.get('delivered', 0):,}", _final(big))
    print(f"  CPU from the POST to the end, share of one core: {_cpu(big)}")
    print(
        "  Sandbox raw capacity: creates straight to it from a process of their own, "
        "no status callbacks"
    )
    for figures, what in ((raw, "hand-written keep-alive client"), (raw_httpx, "httpx client")):
        _row(
            f"  {what}, {int(figures['concurrency'])} at once",
            f"{float(figures['creates_per_second']):,.0f}/s",
            f"{int(figures['creates']):,} creates, {int(figures['failures'])} failed; CPU: "
            f"client {float(figures['client_cpu_share']):.0%}, "
            f"sandbox {float(figures['sandbox_cpu_share']):.0%}",
        )
    print()
    print(f"Peak RSS during a campaign (fresh processes; sampled every {SAMPLE_SECONDS} s)")
    _row("process", f"{small.recipients:,} -> {big.recipients:,}", "ratio; target")
    ratios: dict[str, float] = {}
    for name, low in small.worker_peak_rss_mb.items():
        high = big.worker_peak_rss_mb[name]
        ratios[name] = high / low
        _row(f"{name} (MB)", f"{low:.0f} -> {high:.0f}", f"{ratios[name]:.2f}; <= 1.10")
    _row(
        "api, for reference (MB)",
        f"{small.api_peak_rss_mb:.0f} -> {big.api_peak_rss_mb:.0f}",
        f"{big.api_peak_rss_mb / small.api_peak_rss_mb:.2f}",
    )
    _row(
        f"the {small.recipients:,} campaign into the sandbox",
        _rate(small.rate_first_to_last),
        f"missing {small.missing:,}, duplicates {small.duplicates:,}; {_final(small)}",
    )
    print(f"  CPU during the {small.recipients:,} campaign: {_cpu(small)}")
    print()
    print(f"Sender limit R across {WORKERS} workers, as the sandbox saw it")
    _row(
        "R (segments/s), messages",
        "busiest 1 s",
        "achieved, share of R (steady: middle 80%; first -> last); target <= R, >= 95%",
    )
    for figure in limited:
        r = figure.segments_per_second
        share = "-"
        if figure.achieved_share_of_r is not None and figure.whole_span_share_of_r is not None:
            share = f"{figure.achieved_share_of_r:.1%} ({figure.whole_span_share_of_r:.1%})"
        notes = [_final(figure)] if not figure.all_final else []
        if figure.duplicates or figure.missing:
            notes.append(f"missing {figure.missing}, duplicates {figure.duplicates}")
        if figure.others_at_sandbox:
            notes.append(f"{figure.others_at_sandbox} other messages in the window")
        _row(
            f"R = {r}, {figure.at_sandbox:,} messages",
            f"{figure.busiest_1s_segments} of {r}",
            "; ".join([share, *notes]),
        )
    print(f"\n(whole run {total_seconds:.0f} s on {os.cpu_count()} CPUs)")
    return {
        "recipients": big.recipients,
        "sandbox_raw_capacity": raw,
        "sandbox_httpx_client": raw_httpx,
        "bulk": asdict(big),
        "ratio_to_raw_capacity": ratio,
        "memory": {
            "small": asdict(small),
            "worker_peak_ratio_big_to_small": ratios,
        },
        "sender_limit": {f"R={figure.segments_per_second}": asdict(figure) for figure in limited},
        "run_seconds": total_seconds,
        "cpus": os.cpu_count(),
    }


# --- main ------------------------------------------------------------------------------------


@contextmanager
def log_directory(given: str | None) -> Iterator[Path]:
    if given is not None:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="bench-bulk-"))
    try:
        yield path
    except BaseException:
        print(f"processes' logs kept in {path}", file=sys.stderr)
        raise
    shutil.rmtree(path, ignore_errors=True)


def _terminate(signum: int, _: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipients", type=int, default=100_000, help="the big campaign")
    parser.add_argument("--memory-small", type=int, default=10_000, help="the small campaign")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds the big campaign may send for"
    )
    parser.add_argument(
        "--small-timeout", type=float, default=120.0, help="the same for the small one"
    )
    parser.add_argument(
        "--settle",
        type=float,
        # The API applies the callbacks of a 100,000 campaign well after its last create: on 2
        # cores it shares them with the workers, the sandbox and PostgreSQL.
        default=180.0,
        help="seconds to wait for the last status callbacks once everything was handed over",
    )
    parser.add_argument(
        "--limit-seconds", type=float, default=10.0, help="length of the limited campaigns at R"
    )
    parser.add_argument("--raw-creates", type=int, default=10_000)
    parser.add_argument("--raw-concurrency", type=int, default=64)
    parser.add_argument(
        "--httpx-creates", type=int, default=3_000, help="the same with an httpx client"
    )
    parser.add_argument(
        "--callback-delay", type=float, default=0.05, help="the sandbox's seconds per status"
    )
    parser.add_argument("--progress-every", type=float, default=10.0, help="seconds")
    parser.add_argument("--json", default="bench/results/bulk.json", help="where to write it")
    parser.add_argument("--logs", default=None, help="keep the processes' logs here")
    args = parser.parse_args()
    began = time.perf_counter()
    # Ctrl-C (even when started in the background) and SIGTERM unwind through the `finally`s:
    # the processes are stopped, the database dropped, Redis flushed.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)

    needed = max(
        args.recipients,
        args.memory_small,
        args.raw_creates,
        args.httpx_creates,
        *(int(rate * args.limit_seconds) for rate in RATES),
    )
    print(f"generating {needed:,} distinct mobile-capable US numbers…", flush=True)
    numbers = us_numbers(needed)
    area_codes, exchanges = {n[2:5] for n in numbers}, {n[2:8] for n in numbers}
    print(f"  {len(area_codes)} area codes, {len(exchanges):,} exchanges")

    with bench_servers() as servers, log_directory(args.logs) as logs:
        redis.Redis.from_url(servers.redis_url).flushdb()
        stack = Stack(servers.database_url, servers.redis_url, logs)
        stack.extra_env.update(production_env())
        rig = Rig(stack, servers.redis_url, args.callback_delay)
        try:
            print("starting the sandbox, the API and the workers…", flush=True)
            rig.fresh_sandbox()
            stack.start_api()
            key = create_bulk_key(servers.database_url)
            with httpx.Client(
                base_url=stack.api, headers={"Authorization": f"Bearer {key}"}, timeout=30
            ) as api:
                rig.restart_workers(0)  # up, idle, as they are while the baselines run
                baselines = {}
                for client, count in (("lean", args.raw_creates), ("httpx", args.httpx_creates)):
                    print(f"the sandbox's raw capacity, {client} client…", flush=True)
                    baselines[client] = sandbox_raw_capacity(
                        rig, client, numbers[:count], args.raw_concurrency
                    )
                    rate = float(baselines[client]["creates_per_second"])
                    print(f"  {rate:,.0f} creates/s", flush=True)

                def campaign(size: int, rate: int, label: str, timeout: float) -> CampaignFigures:
                    return run_campaign(
                        stack, api, rig, numbers[:size], label=label,
                        segments_per_second=rate, timeout=timeout,
                        progress_every=args.progress_every, settle=args.settle,
                    )  # fmt: skip

                small = campaign(
                    args.memory_small, 0, f"bulk {args.memory_small}", args.small_timeout
                )
                big = campaign(args.recipients, 0, f"bulk {args.recipients}", args.timeout)
                limited = [
                    campaign(
                        int(rate * args.limit_seconds),
                        rate,
                        f"R={rate}",
                        args.limit_seconds * 3 + 60,
                    )
                    for rate in RATES
                ]
        finally:
            stack.stop_all()
            redis.Redis.from_url(servers.redis_url).flushdb()

    figures = report(
        baselines["lean"], baselines["httpx"], small, big, limited, time.perf_counter() - began
    )
    figures["command"] = " ".join([".venv/bin/python -m bench.bulk", *sys.argv[1:]])
    line = json.dumps(figures)
    print(line)
    output = Path(args.json)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(line + "\n")
    print(f"written to {output}")


if __name__ == "__main__":
    main()
