"""arq job of retention: thin, it calls the retention service."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from app.core.settings import Settings
from app.core.state import State
from app.idempotency import service as idempotency
from app.retention.service import apply_retention

logger = logging.getLogger(__name__)

# arq holds every job of a worker that died for its longest job timeout (one in-progress
# marker length for all): a job allowed an hour would keep a dead worker's sends and campaign
# chunks an hour. A run stops after its budget and queues its continuation instead; batches
# commit as they go, so the next run goes on where this one stopped.
RETENTION_BUDGET_SECONDS = 60.0
RETENTION_TIMEOUT_SECONDS = RETENTION_BUDGET_SECONDS + 30
CONTINUE_JOB = "continue_retention"


async def run_retention(
    ctx: dict[str, Any], budget: float = RETENTION_BUDGET_SECONDS
) -> dict[str, int | bool]:
    """Daily: bodies erased, old messages deleted with their counts kept (SPEC §9)."""
    state: State = ctx["state"]
    settings: Settings = ctx["settings"]
    try:
        async with asyncio.timeout(budget):
            report = await apply_retention(state["sessionmaker"], settings)
            purged = await idempotency.purge_expired(state["sessionmaker"])
    except TimeoutError:
        logger.info("retention: out of its %.0f s budget, continuing in a new job", budget)
        await ctx["redis"].enqueue_job(CONTINUE_JOB, _job_id=CONTINUE_JOB)
        return {"continued": True}
    return {**report.as_dict(), "idempotency_keys_purged": purged}
