"""arq jobs of the outbox: thin, they call the outbox service."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from arq import Retry
from redis.exceptions import RedisError

from app.core.database import transaction
from app.core.state import State
from app.messages.categories import Category
from app.outbox import repository
from app.outbox.coalescing import SendCoalescer
from app.outbox.metrics import MESSAGES_DUE, QUEUE_DEPTH
from app.outbox.queue import enqueue_send, jobs_due_now
from app.outbox.service import Outcome

logger = logging.getLogger(__name__)

SWEEP_BATCH = 1000


def sends_of(ctx: dict[str, Any]) -> SendCoalescer:
    sends: SendCoalescer = ctx["sends"]
    return sends


async def send_message(ctx: dict[str, Any], message_id: str, scheduled: bool = False) -> str:
    """`scheduled`: a job deferred to the message's time, which releases it first. The jobs
    running at once in this worker go together (app/outbox/coalescing.py)."""
    attempt = await sends_of(ctx).send(uuid.UUID(message_id), release=scheduled)
    if attempt.outcome is Outcome.RETRY and attempt.retry_at is not None:
        # The same job again later: its id stays the message id.
        delay = max(0.0, (attempt.retry_at - datetime.now(UTC)).total_seconds())
        raise Retry(defer=delay)
    return attempt.outcome.value


async def sweep(ctx: dict[str, Any]) -> dict[str, int]:
    """Puts every due message on the queue: scheduled ones whose time came, retries, and
    whatever a lost Redis or a dead worker dropped. Job ids make this safe to repeat.
    Samples the backlog on the way: the due messages it walked, the jobs due on the queue."""
    state: State = ctx["state"]
    async with transaction(state["sessionmaker"]) as session:
        released = await repository.release_scheduled(
            session, now=datetime.now(UTC), limit=SWEEP_BATCH
        )
    enqueued = 0
    walked = 0
    after: repository.DueCursor | None = None
    while True:
        async with transaction(state["sessionmaker"]) as session:
            due = await repository.due(session, limit=SWEEP_BATCH, after=after)
        codes = [item.id for item in due if item.category == Category.ONE_TIME_CODE]
        others = [item.id for item in due if item.category != Category.ONE_TIME_CODE]
        enqueued += await enqueue_send(state["redis"], codes, priority=True)
        enqueued += await enqueue_send(state["redis"], others)
        walked += len(due)
        if len(due) < SWEEP_BATCH:
            break
        after = due[-1].cursor
    MESSAGES_DUE.set(walked)
    try:
        QUEUE_DEPTH.set(await jobs_due_now(state["redis"]))
    except (RedisError, OSError) as error:
        logger.warning("could not measure the queue: %r", error)
    return {"released": len(released), "enqueued": enqueued}
