"""Scenario 2: messages sent one by one through POST /api/sms/send and the workers into the
sandbox, from the first POST to the sandbox's last create. Baselines in the same run, on fresh
sandboxes: Twilio's Python SDK creating the same messages in a plain loop (what a team would
write instead), and the sandbox's raw capacity (creates sent straight to it, the limit).

The sandbox posts no status callbacks here (`drop_callbacks`): the messages stay `sent`, and
scenario 3 drives their callbacks itself."""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass
from typing import Any

from app.core.settings import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, SANDBOX_FROM_NUMBER
from bench.bulk import ProcessSampler, sandbox_messages, sandbox_raw_capacity
from bench.suite.load import LoadPlan, LoadResult, run_load
from bench.suite.payloads import address, send_request
from bench.suite.report import Row, per_second, ratio
from bench.suite.rig import Suite
from bench.suite.timing import epoch, wait_for

BODY = "Your order has shipped and will arrive on Tuesday."
CONNECTIONS = 32
# Without callbacks a message handed over stays `sending`, with Twilio's SID.
NOT_HANDED_OVER = (
    "SELECT 1 FROM messages WHERE status IN ('scheduled', 'queued') "
    "OR (status = 'sending' AND twilio_sid IS NULL) LIMIT 1"
)
RAW_CONCURRENCY = 64


@dataclass
class EndToEndFigures:
    messages: int
    at_sandbox: int
    duplicates: int
    load: LoadResult
    seconds_to_last_create: float | None
    rate_end_to_end: float | None  # first POST -> last create
    rate_first_to_last: float | None  # the sandbox's first -> last create
    sdk: dict[str, float]
    raw: dict[str, Any]
    memory: dict[str, float]


def _sdk_loop(base_url: str, numbers: list[str], results: multiprocessing.Queue[Any]) -> None:
    from twilio.rest import Client

    client = Client(SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN)
    client.api.base_url = base_url  # the sandbox stands in for api.twilio.com
    began, cpu = time.perf_counter(), time.process_time()
    for number in numbers:
        client.messages.create(to=number, from_=SANDBOX_FROM_NUMBER, body=BODY)
    seconds = time.perf_counter() - began
    results.put(
        {
            "messages": len(numbers),
            "seconds": seconds,
            "per_second": len(numbers) / seconds,
            "client_cpu_share": (time.process_time() - cpu) / seconds,
        }
    )


def twilio_sdk_loop(suite: Suite, numbers: list[str]) -> dict[str, float]:
    suite.fresh_sandbox(drop_callbacks=1.0)
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[dict[str, float]] = context.Queue()
    process = context.Process(target=_sdk_loop, args=(suite.stack.sandbox, numbers, results))
    process.start()
    try:
        figures = results.get(timeout=600)
    finally:
        process.join(10)
    at_sandbox = sum(m["body"] == BODY for m in sandbox_messages(suite.stack))
    figures["at_sandbox"] = at_sandbox
    return figures


def run(suite: Suite, numbers: list[str], *, sdk_messages: int) -> EndToEndFigures:
    suite.flush_redis()
    suite.fresh_sandbox(drop_callbacks=1.0)
    suite.restart_workers()
    api = suite.stack.api
    host, port = address(api)
    payloads = [send_request(api, suite.api_key, number, BODY) for number in numbers]
    with ProcessSampler(suite.pids()) as sampler:
        posted_at = time.time()
        print(f"  {len(numbers):,} x POST /api/sms/send, {CONNECTIONS} at once…", flush=True)
        load = run_load(LoadPlan("closed", host, port, payloads, CONNECTIONS, 600))
        print(f"  accepted in {load.seconds:.1f} s; waiting for the workers…", flush=True)
        wait_for(
            lambda: not suite.sql(NOT_HANDED_OVER),
            timeout=300,
            what="every message handed to the sandbox",
        )
    ours = [m for m in sandbox_messages(suite.stack) if m["body"] == BODY]
    created = sorted(epoch(m["date_created"]) for m in ours)
    last = created[-1] if created else None
    print(f"  baseline: Twilio's SDK in a plain loop, {sdk_messages:,} messages…", flush=True)
    sdk = twilio_sdk_loop(suite, numbers[:sdk_messages])
    print(f"  baseline: the sandbox's raw capacity, {len(numbers):,} creates…", flush=True)
    raw = sandbox_raw_capacity(suite.rig, "lean", numbers, RAW_CONCURRENCY)
    return EndToEndFigures(
        messages=len(numbers),
        at_sandbox=len(ours),
        duplicates=len(ours) - len({m["to"] for m in ours}),
        load=load,
        seconds_to_last_create=last - posted_at if last else None,
        rate_end_to_end=len(created) / (last - posted_at) if last else None,
        rate_first_to_last=(
            (len(created) - 1) / (created[-1] - created[0]) if len(created) > 1 else None
        ),
        sdk=sdk,
        raw=raw,
        memory={name: peak / 2**20 for name, peak in sampler.peaks.items()},
    )


def rows(figures: EndToEndFigures) -> list[Row]:
    name = f"2 end to end, {figures.messages:,}"
    sdk_rate, raw_rate = figures.sdk["per_second"], float(figures.raw["creates_per_second"])
    return [
        Row(
            name,
            "first POST -> last create at the sandbox",
            per_second(figures.rate_end_to_end),
            f"Twilio SDK loop {per_second(sdk_rate)} "
            f"({ratio(figures.rate_end_to_end, sdk_rate)}); sandbox raw "
            f"{per_second(raw_rate)} ({ratio(figures.rate_end_to_end, raw_rate)})",
            ">= 1,000/s (bulk's target)",
            (figures.rate_end_to_end or 0) >= 1000,
        ),
        Row(
            name,
            "sandbox's first -> last create",
            per_second(figures.rate_first_to_last),
            f"API accepted all in {figures.load.seconds:.1f} s "
            f"({per_second(figures.load.count(202) / figures.load.seconds)})",
        ),
        Row(
            name,
            "messages at the sandbox",
            f"{figures.at_sandbox:,}",
            f"of {figures.messages:,}; duplicates {figures.duplicates}",
            "all, no duplicate",
            figures.at_sandbox == figures.messages and figures.duplicates == 0,
        ),
    ]


def as_json(figures: EndToEndFigures) -> dict[str, Any]:
    return {
        "messages": figures.messages,
        "at_sandbox": figures.at_sandbox,
        "duplicates": figures.duplicates,
        "accept_seconds": figures.load.seconds,
        "accept_statuses": figures.load.statuses,
        "seconds_to_last_create": figures.seconds_to_last_create,
        "rate_end_to_end": figures.rate_end_to_end,
        "rate_first_to_last": figures.rate_first_to_last,
        "twilio_sdk_loop": figures.sdk,
        "sandbox_raw_capacity": figures.raw,
        "ratio_to_sdk": (figures.rate_end_to_end or 0) / figures.sdk["per_second"],
        "ratio_to_raw": (figures.rate_end_to_end or 0) / float(figures.raw["creates_per_second"]),
        "peak_rss_mb": figures.memory,
    }
