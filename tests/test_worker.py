"""The arq worker: it runs jobs against the real Redis and reaches the database, and the
`worker-check` command proves a running worker does."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import uvloop
from arq import create_pool
from arq.connections import ArqRedis
from arq.worker import Worker
from click.testing import CliRunner
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import make_url

import app.worker
from app.cli import cli
from app.core.redis import RedisNotConfigured, create_redis, redis_settings
from app.core.settings import Settings
from app.localdev.servers import start_redis
from app.worker import check_worker, worker_settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# arq's Worker.close still calls redis' deprecated close(); not ours to fix.
arq_close_warning = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


@pytest.fixture(autouse=True)
def loop_policy_kept() -> Iterator[None]:
    """Reading WorkerSettings installs uvloop's policy for the worker's loop: not for the
    tests after these."""
    policy = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(policy)


def _flush(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()


@pytest.fixture
def clean_redis(settings: Settings) -> Iterator[str]:
    """The test Redis, emptied before and after (no job left queued for a later worker)."""
    assert settings.redis_url is not None
    _flush(settings.redis_url)
    yield settings.redis_url
    _flush(settings.redis_url)


async def _run_burst(settings: Settings, queue: str) -> Worker:
    """Runs a worker built by `worker_settings` (without its cron jobs, which have tests of
    their own) until its queue is empty, then closes it."""
    worker = Worker(
        **{**worker_settings(settings), "cron_jobs": []},
        burst=True,
        handle_signals=False,
        queue_name=queue,
    )
    try:
        await worker.main()
    finally:
        await worker.close()
    return worker


@arq_close_warning
async def test_a_worker_runs_check_worker_and_reaches_the_database(
    settings: Settings, clean_redis: str
) -> None:
    queue = f"test:{uuid.uuid4().hex}"
    pool: ArqRedis = await create_redis(settings)
    try:
        job = await pool.enqueue_job("check_worker", _queue_name=queue)
        assert job is not None

        worker = await _run_burst(settings, queue)

        result = await job.result(timeout=5)
        info = await job.info()
    finally:
        await pool.aclose()

    assert result == {
        "database": "ok",
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "event_loop": "asyncio",  # the test's loop; `arq` runs uvloop's (below)
    }
    assert worker.jobs_complete == 1
    assert worker.jobs_failed == 0
    assert info is not None
    assert info.function == "check_worker"


@arq_close_warning
async def test_a_worker_that_cannot_reach_the_database_reports_the_failure(
    settings: Settings, clean_redis: str
) -> None:
    assert settings.database_url is not None
    unreachable = settings.model_copy(
        update={
            "database_url": make_url(settings.database_url)
            .set(database="no_such_database")
            .render_as_string(False)
        }
    )
    queue = f"test:{uuid.uuid4().hex}"
    pool: ArqRedis = await create_redis(settings)
    try:
        job = await pool.enqueue_job("check_worker", _queue_name=queue)
        assert job is not None

        worker = await _run_burst(unreachable, queue)

        with pytest.raises(Exception, match="no_such_database"):
            await job.result(timeout=5)
    finally:
        await pool.aclose()
    assert worker.jobs_failed == 1
    assert worker.jobs_complete == 0


def test_worker_settings_are_read_from_the_environment_on_access(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings: Settings
) -> None:
    monkeypatch.chdir(tmp_path)
    assert settings.database_url is not None
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/13")

    first = app.worker.WorkerSettings

    assert isinstance(first, dict)
    assert first["redis_settings"].host == "127.0.0.1"
    assert first["redis_settings"].port == 6379
    assert first["redis_settings"].database == 13
    assert check_worker in first["functions"]
    assert first["ctx"]["settings"].database_url == settings.database_url
    assert isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)

    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6380/12")
    second = app.worker.WorkerSettings
    assert second["redis_settings"].port == 6380  # built anew: not frozen at import
    assert second["redis_settings"].database == 12


def test_worker_settings_without_redis_url_say_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env, no .data/local.env
    monkeypatch.delenv("REDIS_URL", raising=False)

    with pytest.raises(RedisNotConfigured, match="REDIS_URL is not set"):
        _ = app.worker.WorkerSettings


def test_other_missing_attributes_are_attribute_errors() -> None:
    with pytest.raises(AttributeError):
        _ = app.worker.NoSuchThing


@pytest.fixture
def running_worker(
    settings: Settings, clean_redis: str, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`arq app.worker.WorkerSettings` as operators run it, in a process of its own."""
    assert settings.database_url is not None
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": clean_redis,
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    log = (tmp_path / "worker.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "arq", "app.worker.WorkerSettings"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_worker_check_gets_an_answer_from_a_running_worker(
    running_worker: subprocess.Popen[bytes],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    assert settings.database_url is not None
    assert settings.redis_url is not None
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("REDIS_URL", settings.redis_url)

    result = CliRunner().invoke(cli, ["worker-check", "--timeout", "20"])

    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert result.exit_code == 0, result.output + log
    answer = json.loads(result.stdout)
    assert answer["database"] == "ok"
    assert answer["worker"] == f"{socket.gethostname()}:{running_worker.pid}"
    assert answer["event_loop"] == "uvloop"
    assert running_worker.poll() is None


def test_worker_check_without_a_worker_times_out_with_a_clear_message(
    settings: Settings, clean_redis: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert settings.database_url is not None
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("REDIS_URL", clean_redis)

    result = CliRunner().invoke(cli, ["worker-check", "--timeout", "1"])

    assert result.exit_code != 0
    assert "no worker answered within 1.0 s" in result.output


async def test_the_worker_rides_out_a_redis_restart_and_the_api_fails_fast(
    tmp_path: Path,
) -> None:
    """arq's poll loop ends the worker process at the first failed Redis command: its
    connection retries through a restart. The API's does not wait (the sweeper queues later
    what it could not)."""
    server = start_redis(tmp_path / "redis", throwaway=True)
    settings = Settings(_env_file=None, redis_url=server.url)
    worker_pool = await create_pool(redis_settings(settings, ride_out_outages=True))
    api_pool = await create_redis(settings)
    try:
        await worker_pool.ping()
        await api_pool.ping()
        server.stop()

        async def start_again() -> None:
            nonlocal server
            await asyncio.sleep(0.5)
            server = await asyncio.to_thread(start_redis, tmp_path / "redis", throwaway=True)

        comeback = asyncio.create_task(start_again())
        with pytest.raises(RedisConnectionError):
            await api_pool.ping()
        assert await worker_pool.ping()
        await comeback
    finally:
        await worker_pool.aclose()
        await api_pool.aclose()
        server.stop()
