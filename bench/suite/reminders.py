"""Scenario 4: reminders due within one minute. Each is POST /api/sms/send with a `send_at`
(category `booking_reminder`, as a booking's reminders are stored): `scheduled`, with an arq
job deferred to its time. All are accepted before the first is due; lateness is the
sandbox's create time minus `send_at`, per message."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.bulk import ProcessSampler, sandbox_messages
from bench.suite.end_to_end import NOT_HANDED_OVER
from bench.suite.load import LoadPlan, percentile, run_load
from bench.suite.payloads import address, send_request
from bench.suite.report import Row, ms
from bench.suite.rig import Suite
from bench.suite.timing import epoch, wait_for

BODY = "Reminder: your appointment starts soon."
CONNECTIONS = 16
P99_TARGET = 1.0


@dataclass
class ReminderFigures:
    reminders: int
    spread_seconds: float
    accept_seconds: float
    lateness: list[float] = field(default_factory=list)
    missing: int = 0
    memory: dict[str, float] = field(default_factory=dict)


def run(
    suite: Suite, numbers: list[str], *, spread: float, accepted_per_second: float
) -> ReminderFigures:
    suite.fresh_sandbox(drop_callbacks=1.0)
    api = suite.stack.api
    host, port = address(api)
    # Time to accept them all before the first is due: scenario 2's rate was taken with the
    # workers busy beside the API, these are accepted with the workers idle (none is due).
    lead = len(numbers) / max(accepted_per_second, 20) * 1.1 + 5
    first_due = datetime.now(UTC) + timedelta(seconds=lead)
    due = {
        number: first_due + timedelta(seconds=spread * index / len(numbers))
        for index, number in enumerate(numbers)
    }
    payloads = [
        send_request(api, suite.api_key, number, BODY, send_at=at, category="booking_reminder")
        for number, at in due.items()
    ]
    with ProcessSampler(suite.pids()) as sampler:
        print(f"  {len(numbers):,} reminders due from {lead:.0f} s on, over {spread:.0f} s…")
        load = run_load(LoadPlan("closed", host, port, payloads, CONNECTIONS, 600))
        if datetime.now(UTC) > first_due:
            print("  warning: accepting took longer than the lead; early ones are late by it")
        time.sleep(max(0.0, (first_due - datetime.now(UTC)).total_seconds() + spread))
        wait_for(
            lambda: not suite.sql(NOT_HANDED_OVER),
            timeout=120,
            what="every reminder handed to the sandbox",
        )
    created = {m["to"]: epoch(m["date_created"]) for m in sandbox_messages(suite.stack)}
    lateness = [created[n] - at.timestamp() for n, at in due.items() if n in created]
    return ReminderFigures(
        reminders=len(numbers),
        spread_seconds=spread,
        accept_seconds=load.seconds,
        lateness=lateness,
        missing=len(numbers) - len(lateness),
        memory={name: peak / 2**20 for name, peak in sampler.peaks.items()},
    )


def rows(figures: ReminderFigures) -> list[Row]:
    name = f"4 reminders, {figures.reminders:,} in {figures.spread_seconds:.0f} s"
    p99 = percentile(figures.lateness, 0.99)
    return [
        Row(name, "lateness p50", ms(percentile(figures.lateness, 0.5))),
        Row(
            name,
            "lateness p99",
            ms(p99),
            f"missing {figures.missing}",
            f"< {ms(P99_TARGET)}",
            p99 is not None and p99 < P99_TARGET and figures.missing == 0,
        ),
        Row(
            name,
            "lateness max",
            ms(max(figures.lateness, default=None)),
            f"accepted in {figures.accept_seconds:.1f} s",
        ),
    ]


def as_json(figures: ReminderFigures) -> dict[str, Any]:
    return {
        "reminders": figures.reminders,
        "spread_seconds": figures.spread_seconds,
        "accept_seconds": figures.accept_seconds,
        "lateness_p50_seconds": percentile(figures.lateness, 0.5),
        "lateness_p99_seconds": percentile(figures.lateness, 0.99),
        "lateness_max_seconds": max(figures.lateness, default=None),
        "missing": figures.missing,
        "peak_rss_mb": figures.memory,
    }
