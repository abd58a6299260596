"""Scenario 3: status callbacks to POST /api/sms/webhook, signed as Twilio signs them, for
scenario 2's messages (all `sending`, with their SIDs): for each, `sent` then `delivered`,
as Twilio posts them. Half at saturation, half at a fixed
arrival rate; then how long until the database agrees: every message `delivered`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bench.bulk import ProcessSampler
from bench.suite.load import LoadPlan, LoadResult, percentile, run_load
from bench.suite.payloads import address, status_callback
from bench.suite.report import Row, finite, ms, per_second, ratio
from bench.suite.rig import Suite
from bench.suite.timing import wait_for

CONNECTIONS = 32
OPEN_LOOP_CONNECTIONS = 64
RATE_TARGET = 2000
HANDED_OVER = "SELECT twilio_sid FROM messages WHERE status = 'sending' AND twilio_sid IS NOT NULL"
P99_TARGET = 0.050


@dataclass
class CallbackFigures:
    messages: int
    saturation: LoadResult
    fixed_rate: LoadResult
    rate: float
    seconds_until_agreed: float
    delivered: int
    expected: int  # the messages whose `delivered` callback was sent
    memory: dict[str, float]

    @property
    def acknowledged_per_second(self) -> float:
        return self.saturation.count(204) / self.saturation.seconds


def run(suite: Suite, *, rate: float) -> CallbackFigures:
    api = suite.stack.api
    host, port = address(api)
    sids = [row["twilio_sid"] for row in suite.sql(HANDED_OVER)]
    pairs = [
        [status_callback(api, sid, "sent"), status_callback(api, sid, "delivered")] for sid in sids
    ]
    half = len(pairs) // 2
    first = [payload for pair in pairs[:half] for payload in pair]
    second = [payload for pair in pairs[half:] for payload in pair]
    with ProcessSampler(suite.pids()) as sampler:
        print(f"  {len(first):,} callbacks at saturation…", flush=True)
        saturation = run_load(LoadPlan("closed", host, port, first, CONNECTIONS, 300))
        print(f"  {len(second):,} callbacks at {rate:,.0f}/s…", flush=True)
        fixed = run_load(LoadPlan("open", host, port, second, OPEN_LOOP_CONNECTIONS, rate=rate))
        answered = time.perf_counter()
        # Pairs go out in order: the `delivered` of each pair whose both halves were sent.
        expected = saturation.requests // 2 + (len(second) - fixed.abandoned) // 2

        def delivered() -> int:
            query = "SELECT count(*) AS n FROM messages WHERE status = 'delivered'"
            count: int = suite.sql(query)[0]["n"]
            return count

        try:
            wait_for(lambda: delivered() >= expected, timeout=30, what="all delivered", every=0.05)
        except TimeoutError as error:
            print(f"  {error}", flush=True)
        agreed = time.perf_counter() - answered
    return CallbackFigures(
        messages=len(sids),
        saturation=saturation,
        fixed_rate=fixed,
        rate=rate,
        seconds_until_agreed=agreed,
        delivered=delivered(),
        expected=expected,
        memory={name: peak / 2**20 for name, peak in sampler.peaks.items()},
    )


def rows(figures: CallbackFigures, healthz_per_second: float) -> list[Row]:
    name = "3 status callbacks"
    fixed = figures.fixed_rate
    p99 = percentile(fixed.latencies, 0.99, never=fixed.abandoned)
    refused = fixed.requests - fixed.count(204)
    return [
        Row(
            name,
            "acknowledged at saturation",
            per_second(figures.acknowledged_per_second),
            f"GET /healthz {per_second(healthz_per_second)} "
            f"({ratio(figures.acknowledged_per_second, healthz_per_second)})",
            f">= {RATE_TARGET:,}/s",
            figures.acknowledged_per_second >= RATE_TARGET,
        ),
        Row(
            name,
            f"p99 at {figures.rate:,.0f}/s (open loop)",
            ms(p99),
            f"p50 {ms(percentile(fixed.latencies, 0.5, never=fixed.abandoned))}; "
            f"{refused} not 204, {fixed.abandoned:,} abandoned (server 2 s behind)",
            f"< {ms(P99_TARGET)}",
            p99 is not None and p99 < P99_TARGET and refused == 0,
        ),
        Row(
            name,
            "last callback answered -> database agrees",
            ms(figures.seconds_until_agreed),
            f"{figures.delivered:,} delivered, of {figures.expected:,} told",
        ),
    ]


def as_json(figures: CallbackFigures) -> dict[str, Any]:
    fixed = figures.fixed_rate
    return {
        "messages": figures.messages,
        "acknowledged_per_second": figures.acknowledged_per_second,
        "saturation_statuses": figures.saturation.statuses,
        "saturation_p99_seconds": percentile(figures.saturation.latencies, 0.99),
        "rate": figures.rate,
        "p50_seconds": finite(percentile(fixed.latencies, 0.5, never=fixed.abandoned)),
        "p99_seconds": finite(percentile(fixed.latencies, 0.99, never=fixed.abandoned)),
        "abandoned": fixed.abandoned,
        "fixed_rate_statuses": fixed.statuses,
        "fixed_rate_client_cpu_share": fixed.client_cpu_share,
        "seconds_until_database_agrees": figures.seconds_until_agreed,
        "delivered": figures.delivered,
        "delivered_callbacks_sent": figures.expected,
        "peak_rss_mb": figures.memory,
    }
