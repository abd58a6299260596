"""Putting a message's send job on the queue, after the commit that created the message."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import cast

from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms, to_unix_ms
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
    remains the backstop: a scheduled job lost with Redis is released by the sweeper).

    What `ArqRedis.enqueue_job` does (a job whose id exists, queued or with a kept result, is
    not queued again), as one script per job and every job in one round trip: enqueue_job
    takes three per job (WATCH, EXISTS, MULTI/EXEC), a tenth of the API's CPU per /send."""
    now_ms = timestamp_ms()
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for message_id, due in pending:
                job_id = str(message_id)
                args = (job_id,) if due is None else (job_id, True)
                score = now_ms
                if priority:
                    score = to_unix_ms(_FRONT_OF_THE_QUEUE)
                elif due is not None:
                    score = to_unix_ms(due)
                lifetime_ms = (
                    int(_PRIORITY_JOB_LIFETIME.total_seconds() * 1000)
                    if priority
                    else score - now_ms + redis.expires_extra_ms
                )
                job = serialize_job(
                    SEND_JOB, args, {}, None, now_ms, serializer=redis.job_serializer
                )
                pipe.eval(
                    _ENQUEUE_UNLESS_EXISTS,
                    3,
                    job_key_prefix + job_id,
                    result_key_prefix + job_id,
                    redis.default_queue_name,
                    str(lifetime_ms),
                    cast(str, job),  # bytes go out as they are; redis-py's hints say str
                    str(score),
                    job_id,
                )
            added: list[int] = await pipe.execute()
    except (RedisError, OSError) as error:
        logger.warning("could not enqueue send jobs (the sweeper will): %r", error)
        return 0
    return sum(added)


# KEYS: the job's key, its result's key, the queue; ARGV: lifetime (ms), job, score, job id.
_ENQUEUE_UNLESS_EXISTS = """
if redis.call('exists', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('psetex', KEYS[1], ARGV[1], ARGV[2])
redis.call('zadd', KEYS[3], ARGV[3], ARGV[4])
return 1
"""


async def jobs_due_now(redis: ArqRedis) -> int:
    """Jobs on arq's queue that are due (scored by when, in ms): waiting, or running (arq
    drops a job from its queue when it ends). Jobs deferred to later, scheduled messages and
    retries, are not counted."""
    # arq's own clock, rounded as it rounds a job's score.
    return int(await redis.zcount(redis.default_queue_name, "-inf", timestamp_ms()))
