"""Every SPEC section 10 figure in one run, each beside its baseline and its target.

    .venv/bin/python -m bench.suite [--send-seconds 8] [--rate 1000] [--messages 10000]
        [--sdk-messages 10000] [--callback-rate 2000] [--reminders 10000] [--spread 60]
        [--campaign 5000] [--codes 5] [--json bench/results/suite.json] [--logs DIR]

Starts a throwaway PostgreSQL and Redis (unless BENCH_DATABASE_URL / BENCH_REDIS_URL name
servers to use: a database of its own is made there, and that Redis database is flushed),
the Twilio sandbox as its own server, the API as the Dockerfile runs it (one uvicorn process)
and 2 arq workers with the service's default settings (quiet hours off). Then:

1. POST /api/sms/send, the API alone: accepted/s at saturation; p50/p99 at `--rate`/s, open
   loop (latency from each request's intended start). Baseline: GET /healthz at saturation.
2. `--messages` sends through the API and the workers into the sandbox. Baselines: Twilio's
   SDK in a plain loop, the sandbox's raw capacity.
3. Signed status callbacks for those messages: acknowledged/s at saturation, p99 at
   `--callback-rate`/s, and how long until the database agrees.
4. `--reminders` scheduled messages due within `--spread` seconds: lateness p50/p99/max.
5. Peak RSS of the API and each worker in each scenario (sampled every 100 ms).
And one-time codes' latency (request -> sandbox inbox) while a `--campaign` is queued.

The load generators run in processes of their own and print their CPU share. Prints one
table and writes the JSON to `--json`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench.bulk import log_directory, us_numbers
from bench.suite import callbacks, codes, end_to_end, reminders, send_api
from bench.suite.report import Row, render
from bench.suite.rig import running_suite


def _memory_rows(peaks: dict[str, dict[str, float]]) -> list[Row]:
    rows = []
    for scenario, by_process in peaks.items():
        workers = [mb for name, mb in by_process.items() if name.startswith("worker")]
        value = f"api {by_process['api']:.0f} MB"
        if workers:
            value += ", workers " + " / ".join(f"{mb:.0f}" for mb in workers) + " MB"
        rows.append(Row("5 peak RSS", scenario, value))
    return rows


def _terminate(signum: int, _: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--send-seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="POST /send per second")
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--sdk-messages", type=int, default=10_000)
    parser.add_argument("--callback-rate", type=float, default=2000.0)
    parser.add_argument("--reminders", type=int, default=10_000)
    parser.add_argument("--spread", type=float, default=60.0, help="seconds reminders span")
    parser.add_argument("--campaign", type=int, default=5_000)
    parser.add_argument("--codes", type=int, default=5)
    parser.add_argument("--json", default="bench/results/suite.json")
    parser.add_argument("--logs", default=None, help="keep the processes' logs here")
    args = parser.parse_args()
    began = time.perf_counter()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)

    needed = max(args.messages, args.reminders, args.campaign) + args.codes
    print(f"generating {needed:,} distinct mobile-capable US numbers…", flush=True)
    numbers = us_numbers(needed)
    rows: list[Row] = []
    figures: dict[str, Any] = {}
    peaks: dict[str, dict[str, float]] = {}
    with log_directory(args.logs) as logs, running_suite(logs, callback_delay=0.05) as suite:
        print("1. POST /api/sms/send", flush=True)
        sent = send_api.run(suite, numbers, seconds=args.send_seconds, rate=args.rate)
        rows += send_api.rows(sent)
        figures["send"], peaks["1 POST /send"] = send_api.as_json(sent), sent.memory

        print("2. end to end", flush=True)
        e2e = end_to_end.run(suite, numbers[: args.messages], sdk_messages=args.sdk_messages)
        rows += end_to_end.rows(e2e)
        figures["end_to_end"], peaks["2 end to end"] = end_to_end.as_json(e2e), e2e.memory

        print("3. status callbacks", flush=True)
        called = callbacks.run(suite, rate=args.callback_rate)
        rows += callbacks.rows(called, sent.healthz_per_second)
        figures["callbacks"], peaks["3 callbacks"] = callbacks.as_json(called), called.memory

        print("4. reminders", flush=True)
        due = reminders.run(
            suite,
            numbers[: args.reminders],
            spread=args.spread,
            # As fast as scenario 2's API accepted with the workers busy beside it.
            accepted_per_second=e2e.load.count(202) / e2e.load.seconds,
        )
        rows += reminders.rows(due)
        figures["reminders"], peaks["4 reminders"] = reminders.as_json(due), due.memory

        print("one-time codes during a campaign", flush=True)
        coded = codes.run(suite, numbers[-args.codes :], numbers[: args.campaign])
        rows += codes.rows(coded)
        figures["codes"], peaks["codes"] = codes.as_json(coded), coded.memory
    rows += _memory_rows(peaks)

    total = time.perf_counter() - began
    print()
    print(render(rows))
    print(f"\n(whole run {total:.0f} s on {os.cpu_count()} CPUs)")
    figures.update(
        run_seconds=total,
        cpus=os.cpu_count(),
        command=" ".join([".venv/bin/python -m bench.suite", *sys.argv[1:]]),
    )
    output = Path(args.json)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"written to {output}")


if __name__ == "__main__":
    main()
