"""The arq worker: `arq app.worker.WorkerSettings`. It builds the same resources as the API."""

from __future__ import annotations

import os
import socket
from typing import Any

from sqlalchemy import text

from app.core.logging import configure_logging
from app.core.redis import redis_settings
from app.core.settings import Settings
from app.core.state import State, close_state, open_state


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    configure_logging(settings.log_level)
    ctx["state"] = await open_state(settings)


async def shutdown(ctx: dict[str, Any]) -> None:
    state: State | None = ctx.get("state")
    if state is not None:
        await close_state(state)


async def check_worker(ctx: dict[str, Any]) -> dict[str, str]:
    """Proves a worker is running and reaches the database (`python -m app.cli worker-check`)."""
    state: State = ctx["state"]
    async with state["sessionmaker"]() as session:
        await session.execute(text("SELECT 1"))
    return {"worker": f"{socket.gethostname()}:{os.getpid()}", "database": "ok"}


def worker_settings(settings: Settings) -> dict[str, Any]:
    return {
        "functions": [check_worker],
        "on_startup": startup,
        "on_shutdown": shutdown,
        "redis_settings": redis_settings(settings),
        "ctx": {"settings": settings},
    }


def __getattr__(name: str) -> Any:
    # Built on first access, not at import: reading the environment is the caller's moment.
    if name == "WorkerSettings":
        return worker_settings(Settings())
    raise AttributeError(name)
