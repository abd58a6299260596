"""The Twilio client's CPU per request, beside two baselines:

- one httpx pool holding every connection (httpx's usual layout): httpcore checks each of a
  pool's connections whenever a request starts or ends, so the client spreads its connections
  over pools of CONNECTIONS_PER_POOL (app/twilio/client.py); this measures what that saves;
- sniffio missing: with anyio 4.16+ sniffio is no longer installed along, and httpcore then
  tries (and fails) to import it on every pool lock. The service depends on sniffio explicitly.

    .venv/bin/python -m bench.twilio_client [--requests 2000] [--concurrency 20]

It starts the Twilio sandbox as its own server and sends real HTTP requests to it. CPU is the
client process's own (user + system), so the sandbox's work does not count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.stack import free_port, wait_until

PROJECT = Path(__file__).resolve().parents[1]

# Runs in a child process, so that hiding sniffio affects nothing else.
_CLIENT = """
import asyncio, json, sys, time
from dataclasses import replace
if sys.argv[1] == "without-sniffio":
    # As if sniffio were not installed: each `import sniffio` searches sys.path, then fails.
    import importlib.machinery

    class NotInstalled:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name == "sniffio":
                importlib.machinery.PathFinder.find_spec("sniffio_is_not_installed", path)
                raise ModuleNotFoundError("No module named 'sniffio'", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled)
import app.twilio.client
from app.core.settings import Settings
from app.twilio.client import TwilioClient
if sys.argv[1] == "one-pool":
    app.twilio.client.CONNECTIONS_PER_POOL = 1_000_000
from app.twilio.schemas import NewMessage

async def main(base_url, count, concurrency):
    account = replace(Settings(_env_file=None).twilio, base_url=base_url)
    client = TwilioClient(account, max_connections=concurrency)
    gate = asyncio.Semaphore(concurrency)
    async def one(n):
        async with gate:
            await client.create_message(NewMessage(to=f"+1415555{n % 10000:04d}", body="bench",
                                                   from_number="+15005550006"))
    await asyncio.gather(*(one(n) for n in range(200)))  # warm-up: connections, imports
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(count)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await client.aclose()
    print(json.dumps({"cpu_us_per_request": cpu / count * 1e6, "requests_per_s": count / wall}))

asyncio.run(main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
"""


def run_client(variant: str, base_url: str, count: int, concurrency: int) -> dict[str, float]:
    output = subprocess.run(  # noqa: S603
        [sys.executable, "-c", _CLIENT, variant, base_url, str(count), str(concurrency)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    figures: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    port = free_port()
    sandbox = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "app.twilio_sandbox", "--port", str(port), "--log-level",
         "warning", "--callback-delay", "3600"],
        cwd=PROJECT,
        env={**os.environ},
    )  # fmt: skip
    try:
        import httpx

        def answers() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/sandbox/faults").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(answers, timeout=30, what="sandbox start")
        base_url = f"http://127.0.0.1:{port}"
        results = {
            variant: run_client(variant, base_url, args.requests, args.concurrency)
            for variant in ("ours", "one-pool", "without-sniffio")
        }
    finally:
        sandbox.terminate()
        sandbox.wait(10)
    print(f"{args.concurrency} requests at once")
    print(f"{'client':<18}{'CPU us/request':>16}{'requests/s':>12}")
    for variant, figures in results.items():
        print(
            f"{variant:<18}{figures['cpu_us_per_request']:>16.0f}{figures['requests_per_s']:>12.0f}"
        )
    ours = results["ours"]["cpu_us_per_request"]
    for variant, what in (("one-pool", "in one pool"), ("without-sniffio", "without sniffio")):
        ratio = results[variant]["cpu_us_per_request"] / ours
        print(f"{what} the client spends {ratio:.2f}x the CPU per request")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
