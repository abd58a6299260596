"""Scenario 1: POST /api/sms/send, the API alone (workers stopped, so they take no CPU from
it): accepted requests/s at saturation, and latency at a fixed arrival rate. Baseline: GET
/healthz at saturation, what one uvicorn process answers with no work behind it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.bulk import ProcessSampler
from bench.suite.load import LoadPlan, LoadResult, http_request, percentile, run_load
from bench.suite.payloads import address, send_request
from bench.suite.report import Row, finite, ms, per_second, ratio
from bench.suite.rig import Suite

SATURATION_CONNECTIONS = 32
OPEN_LOOP_CONNECTIONS = 64
P99_TARGET = 0.025
ACCEPTED_TARGET = 1500


@dataclass
class SendFigures:
    accepted_per_second: float
    healthz_per_second: float
    saturation: LoadResult
    fixed_rate: LoadResult
    rate: float
    memory: dict[str, float]


def run(suite: Suite, numbers: list[str], *, seconds: float, rate: float) -> SendFigures:
    suite.stop_workers()
    suite.flush_redis()
    api = suite.stack.api
    host, port = address(api)
    # Enough for the fastest server we could meet; built up front, so sending costs nothing.
    count = int(4000 * seconds)
    payloads = [
        send_request(api, suite.api_key, numbers[i % len(numbers)], f"Bench send {i}")
        for i in range(count)
    ]
    healthz = [http_request(host, port, "/healthz", method="GET")] * count
    with ProcessSampler(suite.pids()) as sampler:
        print("  warming up, then GET /healthz at saturation…", flush=True)
        run_load(LoadPlan("closed", host, port, payloads[-500:], SATURATION_CONNECTIONS, 30))
        ceiling = run_load(LoadPlan("closed", host, port, healthz, SATURATION_CONNECTIONS, seconds))
        print(f"  POST /api/sms/send at saturation for {seconds:.0f} s…", flush=True)
        saturation = run_load(
            LoadPlan("closed", host, port, payloads, SATURATION_CONNECTIONS, seconds)
        )
        print(f"  POST /api/sms/send at {rate:,.0f}/s for {seconds:.0f} s…", flush=True)
        fixed = run_load(
            LoadPlan(
                "open",
                host,
                port,
                payloads[-int(rate * seconds) :],
                OPEN_LOOP_CONNECTIONS,
                rate=rate,
            )
        )
    # What was accepted here is not the workers' business in the next scenarios.
    suite.sql("UPDATE messages SET status = 'cancelled', final_at = now() WHERE status = 'queued'")
    suite.flush_redis()
    return SendFigures(
        accepted_per_second=saturation.count(202) / saturation.seconds,
        healthz_per_second=ceiling.count(200) / ceiling.seconds,
        saturation=saturation,
        fixed_rate=fixed,
        rate=rate,
        memory={name: peak / 2**20 for name, peak in sampler.peaks.items()},
    )


def rows(figures: SendFigures) -> list[Row]:
    name = "1 POST /send"
    fixed = figures.fixed_rate
    p50 = percentile(fixed.latencies, 0.5, never=fixed.abandoned)
    p99 = percentile(fixed.latencies, 0.99, never=fixed.abandoned)
    refused = fixed.requests - fixed.count(202)
    return [
        Row(
            name,
            "accepted at saturation",
            per_second(figures.accepted_per_second),
            f"GET /healthz {per_second(figures.healthz_per_second)} "
            f"({ratio(figures.accepted_per_second, figures.healthz_per_second)})",
            f">= {ACCEPTED_TARGET:,}/s",
            figures.accepted_per_second >= ACCEPTED_TARGET,
        ),
        Row(
            name,
            f"p50 at {figures.rate:,.0f}/s",
            ms(p50),
            f"p50 at saturation {ms(percentile(figures.saturation.latencies, 0.5))}",
        ),
        Row(
            name,
            f"p99 at {figures.rate:,.0f}/s (open loop)",
            ms(p99),
            f"{refused} not 202, {fixed.abandoned:,} abandoned (server 2 s behind); "
            f"load generator CPU {fixed.client_cpu_share:.0%}",
            f"< {ms(P99_TARGET)}",
            p99 is not None and p99 < P99_TARGET and refused == 0,
        ),
    ]


def as_json(figures: SendFigures) -> dict[str, Any]:
    fixed, saturation = figures.fixed_rate, figures.saturation
    return {
        "accepted_per_second": figures.accepted_per_second,
        "healthz_per_second": figures.healthz_per_second,
        "saturation_statuses": saturation.statuses,
        "saturation_client_cpu_share": saturation.client_cpu_share,
        "rate": figures.rate,
        "p50_seconds": finite(percentile(fixed.latencies, 0.5, never=fixed.abandoned)),
        "p99_seconds": finite(percentile(fixed.latencies, 0.99, never=fixed.abandoned)),
        "abandoned": fixed.abandoned,
        "max_seconds": max(fixed.latencies, default=None),
        "fixed_rate_statuses": fixed.statuses,
        "fixed_rate_late_starts": fixed.late_starts,
        "fixed_rate_client_cpu_share": fixed.client_cpu_share,
        "peak_rss_mb": figures.memory,
    }
