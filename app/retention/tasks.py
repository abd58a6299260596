"""arq job of retention: thin, it calls the retention service."""

from __future__ import annotations

from typing import Any

from app.core.settings import Settings
from app.core.state import State
from app.idempotency import service as idempotency
from app.retention.service import apply_retention

# Batches commit as they go: a run cut short by this keeps its work, the next one goes on.
RETENTION_TIMEOUT_SECONDS = 3600


async def run_retention(ctx: dict[str, Any]) -> dict[str, int | bool]:
    """Daily: bodies erased, old messages deleted with their counts kept (SPEC §9)."""
    state: State = ctx["state"]
    settings: Settings = ctx["settings"]
    report = await apply_retention(state["sessionmaker"], settings)
    purged = await idempotency.purge_expired(state["sessionmaker"])
    return {**report.as_dict(), "idempotency_keys_purged": purged}
