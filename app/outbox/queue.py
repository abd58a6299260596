"""Putting a message's send job on the queue, after the commit that created the message."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable

from arq.connections import ArqRedis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

SEND_JOB = "send_message"


async def enqueue_send(redis: ArqRedis, message_ids: Iterable[uuid.UUID]) -> int:
    """The job id is the message id: a message already queued is not queued twice. A failure
    here loses nothing: the sweeper finds every due message in the database."""
    enqueued = 0
    try:
        for message_id in message_ids:
            job = await redis.enqueue_job(SEND_JOB, str(message_id), _job_id=str(message_id))
            enqueued += job is not None
    except (RedisError, OSError) as error:
        logger.warning("could not enqueue send jobs (the sweeper will): %r", error)
    return enqueued
