"""Putting a message's send job on the queue, after the commit that created the message."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from arq.connections import ArqRedis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

SEND_JOB = "send_message"


# arq takes jobs in the order of their score, the time they are due: a job "due" long ago goes
# before everything else on the queue. One-time codes jump a running campaign this way.
_FRONT_OF_THE_QUEUE = datetime(2000, 1, 1, tzinfo=UTC)
_PRIORITY_JOB_LIFETIME = timedelta(hours=1)


async def enqueue_send(
    redis: ArqRedis, message_ids: Iterable[uuid.UUID], *, priority: bool = False
) -> int:
    """The job id is the message id: a message already queued is not queued twice. A failure
    here loses nothing: the sweeper finds every due message in the database."""
    enqueued = 0
    extra: dict[str, Any] = (
        {"_defer_until": _FRONT_OF_THE_QUEUE, "_expires": _PRIORITY_JOB_LIFETIME}
        if priority
        else {}
    )
    try:
        for message_id in message_ids:
            job = await redis.enqueue_job(
                SEND_JOB, str(message_id), _job_id=str(message_id), **extra
            )
            enqueued += job is not None
    except (RedisError, OSError) as error:
        logger.warning("could not enqueue send jobs (the sweeper will): %r", error)
    return enqueued
