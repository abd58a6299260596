"""The whole service as real processes, for end-to-end tests: the Twilio sandbox as its own
server, the API under uvicorn, arq workers, on the test PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import redis
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from app.auth import api_keys
from app.auth.principal import Scope
from app.core.database import transaction
from app.core.migrations import upgrade_to_head
from app.core.settings import (
    SANDBOX_ACCOUNT_SID,
    SANDBOX_AUTH_TOKEN,
    SANDBOX_FROM_NUMBER,
    Settings,
)
from app.messages.status import FINAL
from app.twilio.signature import compute_signature
from tests.support import create_database

PROJECT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def redis_url_for_db(url: str, db: int) -> str:
    """The same server, another database number (unix:// URLs take it as a query)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return urlunsplit(parts._replace(query=f"db={db}"))
    return urlunsplit(parts._replace(path=f"/{db}", query=""))


def wait_until(
    check: Callable[[], bool], *, timeout: float, interval: float = 0.05, what: str = "it"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} did not happen within {timeout} s")


@dataclass
class Stack:
    database_url: str
    redis_url: str
    log_dir: Path
    api_port: int = field(default_factory=free_port)
    sandbox_port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def sandbox(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "APP_ENV": "test",
            "LOG_LEVEL": "WARNING",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "PUBLIC_BASE_URL": self.api,
            "TWILIO_ACCOUNT_SID": SANDBOX_ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": SANDBOX_AUTH_TOKEN,
            "TWILIO_FROM_NUMBER": SANDBOX_FROM_NUMBER,
            "TWILIO_BASE_URL": self.sandbox,
            "TWILIO_TIMEOUT_SECONDS": "1",
            # Retries in tenths of seconds, not seconds: the storms here are short.
            "SEND_RETRY_BASE_SECONDS": "0.05",
            "SEND_RETRY_CAP_SECONDS": "1",
            "SEND_RECONCILE_WINDOW_SECONDS": "1",
            "SMS_REQUIRE_VERIFIED_PHONE": "true",
            **self.extra_env,
        }

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(  # noqa: S603
            command, cwd=PROJECT, env=self.env(), stdout=log, stderr=subprocess.STDOUT
        )
        self.processes[name] = process
        return process

    def start_sandbox(self, *, callback_delay: float = 0.05, hang_seconds: float = 3.0) -> None:
        self._spawn(
            "sandbox",
            [
                sys.executable, "-m", "app.twilio_sandbox",
                "--port", str(self.sandbox_port),
                "--callback-delay", str(callback_delay),
                "--hang-seconds", str(hang_seconds),
                "--log-level", "warning",
            ],
        )  # fmt: skip
        self._wait_http(f"{self.sandbox}/sandbox/faults", "sandbox")

    def start_api(self) -> None:
        self._spawn(
            "api",
            [
                sys.executable, "-m", "uvicorn", "app.main:app",
                "--host", "127.0.0.1", "--port", str(self.api_port),
                "--log-level", "warning", "--no-access-log",
            ],
        )  # fmt: skip
        self._wait_http(f"{self.api}/readyz", "api")

    def start_worker(self, name: str = "worker") -> subprocess.Popen[bytes]:
        process = self._spawn(name, [sys.executable, "-m", "arq", "app.worker.WorkerSettings"])
        wait_until(
            lambda: b"Starting worker" in (self.log_dir / f"{name}.log").read_bytes(),
            timeout=START_TIMEOUT,
            what=f"{name} start",
        )
        return process

    def stop(self, name: str, *, kill: bool = False) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def _wait_http(self, url: str, name: str) -> None:
        process = self.processes[name]

        def answers() -> bool:
            if process.poll() is not None:
                log = (self.log_dir / f"{name}.log").read_text(errors="replace")
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{log}")
            try:
                return httpx.get(url, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(answers, timeout=START_TIMEOUT, what=f"{name} start")

    # The sandbox's test-only endpoints.

    def inbox(self, number: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.sandbox}/sandbox/inbox/{number}", timeout=5)
        response.raise_for_status()
        messages: list[dict[str, Any]] = response.json()["messages"]
        return messages

    def all_sandbox_messages(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.sandbox}/sandbox/messages", timeout=5)
        response.raise_for_status()
        messages: list[dict[str, Any]] = response.json()["messages"]
        return messages

    def set_faults(self, **knobs: Any) -> None:
        httpx.put(f"{self.sandbox}/sandbox/faults", json=knobs, timeout=5).raise_for_status()

    def reset_sandbox(self) -> None:
        httpx.post(f"{self.sandbox}/sandbox/reset", timeout=5).raise_for_status()

    def signed_post(self, path: str, params: Mapping[str, str]) -> httpx.Response:
        """A request as Twilio sends it: form-encoded, signed over PUBLIC_BASE_URL + path."""
        signature = compute_signature(SANDBOX_AUTH_TOKEN, self.api + path, params)
        return httpx.post(
            self.api + path, data=dict(params), headers={"X-Twilio-Signature": signature}
        )


@contextmanager
def running_stack(database_url: str, redis_url: str, log_dir: Path) -> Iterator[Stack]:
    stack = Stack(database_url, redis_url, log_dir)
    try:
        stack.start_sandbox()
        stack.start_api()
        yield stack
    finally:
        stack.stop_all()


SENDING_SCOPES = (Scope.SMS_SEND, Scope.SMS_READ, Scope.USERS_WRITE)


def create_api_key(
    database_url: str, name: str = "e2e", scopes: Sequence[Scope] = SENDING_SCOPES
) -> str:
    """A service key (by default with every sending scope), made straight in the database."""

    async def create() -> str:
        url = Settings(_env_file=None, database_url=database_url).database_url
        assert url is not None
        engine = create_async_engine(url)
        try:
            async with transaction(async_sessionmaker(engine)) as session:
                created = await api_keys.create_key(session, name, list(scopes))
        finally:
            await engine.dispose()
        return created.secret

    return asyncio.run(create())


@contextmanager
def e2e_stack(
    database_url: str, redis_url: str, log_dir: Path, *, name: str, redis_db: int
) -> Iterator[Stack]:
    """A stack on a database and a Redis db of its own (one per test module: modules running
    in one session must not share either), an API key in `extra_env["E2E_KEY"]` and a worker."""
    url, drop = create_database(database_url, name)
    own_redis = redis_url_for_db(redis_url, redis_db)
    redis.Redis.from_url(own_redis).flushdb()
    try:
        upgrade_to_head(url)
        with running_stack(url, own_redis, log_dir) as running:
            running.extra_env["E2E_KEY"] = create_api_key(url)
            running.start_worker("worker-1")
            yield running
    finally:
        drop()


@contextmanager
def api_client(stack: Stack) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {stack.extra_env['E2E_KEY']}"}
    with httpx.Client(base_url=stack.api, headers=headers, timeout=10) as client:
        yield client


def settled(api: httpx.Client, message_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """The message once its status is final (delivered, undelivered, failed, …)."""
    found: dict[str, Any] = {}

    def is_final() -> bool:
        found.update(api.get(f"/api/sms/status/{message_id}").json())
        return found.get("status") in FINAL

    wait_until(is_final, timeout=timeout, interval=0.1, what=f"message {message_id} final")
    return found
