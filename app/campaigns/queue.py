"""Putting a campaign's chunk jobs on the queue, after the commit that wrote their messages."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from arq.connections import ArqRedis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

CHUNK_JOB = "send_campaign_chunk"

# A chunk number, and when its first messages are due (None: now).
ChunkDue = tuple[int, datetime | None]


def chunk_job_id(campaign_id: uuid.UUID, chunk: int) -> str:
    return f"campaign:{campaign_id}:{chunk}"


async def enqueue_chunks(
    redis: ArqRedis, campaign_id: uuid.UUID, chunks: Iterable[ChunkDue]
) -> int:
    """The job id names the chunk: a chunk queued or running is not queued twice. A failure
    here loses nothing: the campaign sweep queues again the chunks with messages due."""
    enqueued = 0
    try:
        for chunk, due in chunks:
            extra: dict[str, Any] = {"_defer_until": due} if due is not None else {}
            job = await redis.enqueue_job(
                CHUNK_JOB,
                str(campaign_id),
                chunk,
                _job_id=chunk_job_id(campaign_id, chunk),
                **extra,
            )
            enqueued += job is not None
    except (RedisError, OSError) as error:
        logger.warning("could not enqueue campaign chunks (the sweep will): %r", error)
    return enqueued
