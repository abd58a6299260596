"""The Twilio client's CPU per create, beside two baselines, against the sandbox as a server:

- ours: requests straight to the aiohttp transport (app/twilio/transport.py);
- httpx's own transport (httpcore) under the same client: what the transport saves;
- an httpx.AsyncClient with httpx's transport, as the client was built before: what skipping
  httpx's client (cookies, URL merging, auth flow) and httpcore together saves.

    .venv/bin/python -m bench.twilio_client [--requests 3000] [--concurrency 20]

CPU is the client process's own (user + system), so the sandbox's work does not count.
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

# Runs in a child process, so that each variant starts alike.
_CLIENT = """
import asyncio, json, sys, time
from dataclasses import replace
import httpx
from app.core.settings import Settings
from app.twilio.client import API_VERSION, TwilioClient
from app.twilio.schemas import NewMessage, TwilioMessage

class HttpxClient:
    \"\"\"An httpx.AsyncClient per 5 connections, as TwilioClient was built before.\"\"\"
    def __init__(self, account, concurrency):
        self.pools = [
            httpx.AsyncClient(
                base_url=f"{account.base_url}/{API_VERSION}/Accounts/{account.account_sid}",
                auth=httpx.BasicAuth(account.username, account.password),
                limits=httpx.Limits(max_connections=5, max_keepalive_connections=5),
            )
            for _ in range(-(-concurrency // 5))
        ]
        self.turn = 0
    async def create_message(self, message):
        self.turn += 1
        pool = self.pools[self.turn % len(self.pools)]
        response = await pool.post("/Messages.json", data=message.form())
        return TwilioMessage.model_validate_json(response.content)
    async def aclose(self):
        for pool in self.pools:
            await pool.aclose()

async def main(variant, base_url, count, concurrency):
    account = replace(Settings(_env_file=None).twilio, base_url=base_url)
    if variant == "ours":
        client = TwilioClient(account, max_connections=concurrency)
    elif variant == "httpx-transport":
        limits = httpx.Limits(max_connections=concurrency)
        client = TwilioClient(account, transport=httpx.AsyncHTTPTransport(limits=limits))
    else:
        client = HttpxClient(account, concurrency)
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

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
"""

VARIANTS = {
    "ours": "aiohttp transport",
    "httpx-transport": "httpx's own transport",
    "httpx-client": "httpx.AsyncClient",
}


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
    parser.add_argument("--requests", type=int, default=3000)
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
            for variant in VARIANTS
        }
    finally:
        sandbox.terminate()
        sandbox.wait(10)
    print(f"{args.concurrency} creates at once")
    print(f"{'client':<24}{'CPU us/create':>15}{'creates/s':>11}{'CPU vs ours':>13}")
    ours = results["ours"]["cpu_us_per_request"]
    for variant, label in VARIANTS.items():
        figures = results[variant]
        cpu = figures["cpu_us_per_request"]
        print(f"{label:<24}{cpu:>15.0f}{figures['requests_per_s']:>11.0f}{cpu / ours:>12.2f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
