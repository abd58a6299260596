"""The arq worker: `arq app.worker.WorkerSettings`. It builds the same resources as the API."""

from __future__ import annotations

import asyncio
import os
import socket
from datetime import UTC
from typing import Any

import uvloop
from arq import cron, func
from sqlalchemy import text

from app.campaigns.chunks import CampaignSender, chunk_timeout_seconds
from app.campaigns.queue import CHUNK_JOB
from app.campaigns.tasks import send_campaign_chunk, sweep_campaigns
from app.core.heap import freeze_startup_heap
from app.core.logging import configure_logging
from app.core.metrics import serve_metrics
from app.core.redis import redis_settings
from app.core.settings import Settings
from app.core.state import State, close_state, open_state
from app.delivery_status.tasks import fetch_prices, poll_statuses
from app.messages.service import templates_dir
from app.notifications.rendering import check_templates
from app.outbox.coalescing import SendCoalescer
from app.outbox.queue import SEND_JOB
from app.outbox.sender_limit import SenderLimit
from app.outbox.service import Outbox, attempt_timeout_seconds
from app.outbox.tasks import send_message, sweep
from app.retention.tasks import CONTINUE_JOB, RETENTION_TIMEOUT_SECONDS, run_retention

EVERY_5_SECONDS = set(range(0, 60, 5))


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    configure_logging(settings.log_level)
    check_templates(templates_dir(settings))
    # First: a port already taken stops the worker before it has opened anything.
    if settings.worker_metrics_port is not None:
        ctx["stop_metrics"] = serve_metrics(settings.worker_metrics_port)
    state = await open_state(settings)
    ctx["state"] = state
    ctx["outbox"] = Outbox(
        settings,
        state["sessionmaker"],
        state["phone_cipher"],
        state["twilio"],
        sender_limit=SenderLimit.from_settings(settings, state["redis"]),
    )
    # Each send job takes at most one create at Twilio: as many in flight as jobs run at once.
    ctx["sends"] = SendCoalescer.build(ctx["outbox"], settings.worker_max_jobs)
    ctx["campaigns"] = CampaignSender.build(
        settings, state["sessionmaker"], state["redis"], ctx["outbox"]
    )
    freeze_startup_heap()


async def shutdown(ctx: dict[str, Any]) -> None:
    state: State | None = ctx.get("state")
    if state is not None:
        await close_state(state)
    stop_metrics = ctx.pop("stop_metrics", None)
    if stop_metrics is not None:
        stop_metrics()


async def check_worker(ctx: dict[str, Any]) -> dict[str, str]:
    """Proves a worker is running and reaches the database (`python -m app.cli worker-check`)."""
    state: State = ctx["state"]
    async with state["sessionmaker"]() as session:
        await session.execute(text("SELECT 1"))
    return {
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "database": "ok",
        "event_loop": type(asyncio.get_running_loop()).__module__.partition(".")[0],
    }


def worker_settings(settings: Settings) -> dict[str, Any]:
    attempt_timeout = attempt_timeout_seconds(settings)
    return {
        "functions": [
            # keep_result=0: a finished job leaves nothing behind, so the sweeper can queue the
            # message id again; tries are bounded by the message's validity, not by arq.
            func(
                send_message,
                name=SEND_JOB,
                keep_result=0,
                max_tries=1_000_000,
                timeout=attempt_timeout,
            ),
            # Job id `campaign:<id>:<chunk>`; a chunk out of time runs again (arq's Retry).
            func(
                send_campaign_chunk,
                name=CHUNK_JOB,
                keep_result=0,
                max_tries=1_000_000,
                timeout=chunk_timeout_seconds(settings),
            ),
            # A retention run out of its budget goes on in this job (app/retention/tasks.py).
            func(
                run_retention, name=CONTINUE_JOB, keep_result=0, timeout=RETENTION_TIMEOUT_SECONDS
            ),
            check_worker,
        ],
        "cron_jobs": [
            cron(sweep, second=EVERY_5_SECONDS, run_at_startup=True, keep_result=0),
            cron(sweep_campaigns, second=EVERY_5_SECONDS, run_at_startup=True, keep_result=0),
            cron(poll_statuses, second={30}, keep_result=0),
            cron(fetch_prices, second={45}, keep_result=0),
            # Daily at 03:17 UTC (see "timezone"); one worker of several gets it (arq's
            # unique cron job id), and the batches skip locked rows anyway.
            cron(
                run_retention,
                hour={3},
                minute={17},
                keep_result=0,
                timeout=RETENTION_TIMEOUT_SECONDS,
            ),
        ],
        # Cron hours and minutes are read in UTC, whatever the host's zone.
        "timezone": UTC,
        "on_startup": startup,
        "on_shutdown": shutdown,
        "redis_settings": redis_settings(settings, ride_out_outages=True),
        "ctx": {"settings": settings},
        "max_jobs": settings.worker_max_jobs,
        # For jobs without a timeout of their own (sweeps, the poller), instead of arq's 300 s:
        # arq takes a dead worker's jobs over once the longest of all timeouts (+10 s) has
        # passed, so none may be longer than a campaign chunk's.
        "job_timeout": chunk_timeout_seconds(settings),
        # Job ids read per poll wait in the worker's memory, in order: a short line lets a
        # code put at the front of the queue start soon even while a campaign runs.
        "queue_read_limit": settings.worker_max_jobs,
        # How often an idle worker looks for jobs: a code or an alert waits at most this.
        "poll_delay": 0.05,
    }


def __getattr__(name: str) -> Any:
    # Built on first access, not at import: reading the environment is the caller's moment.
    if name == "WorkerSettings":
        settings = worker_settings(Settings())
        # arq's CLI reads this before it makes the worker's event loop: uvloop's, as uvicorn
        # picks for the API (asyncio's own loop runs its selector and socket writes in Python).
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return settings
    raise AttributeError(name)
