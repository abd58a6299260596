"""Putting a message's send job on the queue, after the commit that created the message."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from arq.connections import ArqRedis
from arq.utils import timestamp_ms
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

SEND_JOB = "send_message"


# arq takes jobs in the order of their score, the time they are due: a job "due" long ago goes
# before everything else on the queue. One-time codes jump a running campaign this way.
_FRONT_OF_THE_QUEUE = datetime(2000, 1, 1, tzinfo=UTC)
_PRIORITY_JOB_LIFETIME = timedelta(hours=1)


# A message id, and when it is due (None: now).
Pending = tuple[uuid.UUID, datetime | None]


async def enqueue_send(
    redis: ArqRedis, message_ids: Iterable[uuid.UUID], *, priority: bool = False
) -> int:
    """The job id is the message id: a message already queued is not queued twice. A failure
    here loses nothing: the sweeper finds every due message in the database."""
    return await enqueue_pending(
        redis, ((message_id, None) for message_id in message_ids), priority=priority
    )


async def enqueue_pending(
    redis: ArqRedis, pending: Iterable[Pending], *, priority: bool = False
) -> int:
    """Messages just stored: queued ones now, scheduled ones as arq jobs deferred to their
    time, so they start within arq's poll delay of it rather than at the next sweep (which
    remains the backstop: a scheduled job lost with Redis is released by the sweeper)."""
    enqueued = 0
    try:
        for message_id, due in pending:
            extra: dict[str, Any] = {}
            if priority:
                extra = {"_defer_until": _FRONT_OF_THE_QUEUE, "_expires": _PRIORITY_JOB_LIFETIME}
            elif due is not None:
                extra = {"_defer_until": due}
            args = (str(message_id),) if due is None else (str(message_id), True)
            job = await redis.enqueue_job(SEND_JOB, *args, _job_id=str(message_id), **extra)
            enqueued += job is not None
    except (RedisError, OSError) as error:
        logger.warning("could not enqueue send jobs (the sweeper will): %r", error)
    return enqueued


async def jobs_due_now(redis: ArqRedis) -> int:
    """Jobs on arq's queue that are due (scored by when, in ms): waiting, or running (arq
    drops a job from its queue when it ends). Jobs deferred to later, scheduled messages and
    retries, are not counted."""
    # arq's own clock, rounded as it rounds a job's score.
    return int(await redis.zcount(redis.default_queue_name, "-inf", timestamp_ms()))
