"""Sending a campaign, a chunk at a time: each chunk job hands its messages to the outbox in
batches (app/outbox/batch.py: claim, checks and outcomes set-based, each message's attempt as
the single path makes it), a bounded number of creates at once per worker, and stops within
CampaignStates.ttl (0.2 s) of a pause or cancel (claims not yet used are given back). At most
CAMPAIGN_PARALLEL_CHUNKS chunk jobs of a campaign are queued or running: each one ending
queues the next, and the campaign sweep queues again what a lost Redis or a dead worker
dropped. A worker holds the message ids of CHUNKS_AT_ONCE chunks at most, whatever the
campaign's size."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.campaigns import repository
from app.campaigns.models import CampaignState
from app.campaigns.queue import enqueue_chunks
from app.campaigns.service import finish_cancelling
from app.core.database import transaction
from app.core.settings import Settings
from app.outbox.batch import BATCH_SIZE, send_batch
from app.outbox.queue import Pending, enqueue_pending
from app.outbox.service import Outbox, Outcome, attempt_timeout_seconds

logger = logging.getLogger(__name__)

# A chunk job stops starting sends after this and is queued again (its id stays the chunk's):
# a worker that dies mid-chunk holds the chunk no longer than the job's timeout.
CHUNK_BUDGET_SECONDS = 60.0


# Chunk jobs one worker runs at once (one finishing its last messages as the next starts):
# arq lets a worker take every job it sees, and one that took all of a campaign's chunks
# would leave the other workers idle. A chunk job over this goes back on the queue, its
# messages untouched, for whichever worker is free a moment later.
CHUNKS_AT_ONCE = 2
BUSY_RETRY_SECONDS = 0.5


# A chunk's batches under way at once: while one sends, the next is claimed and the last one's
# SIDs are recorded. One at a time, the worker's creates waited on those transactions: the
# creates in flight averaged well under the gate's CAMPAIGN_CONCURRENCY (bench.bulk).
BATCHES_AT_ONCE = 3


def chunk_timeout_seconds(settings: Settings) -> float:
    """The budget, plus the longest attempt started just before it ran out."""
    return CHUNK_BUDGET_SECONDS + attempt_timeout_seconds(settings) + 30


@dataclass
class CampaignStates:
    """Campaign states as a worker's chunk jobs see them: read from the database at most
    once per TTL per campaign, whatever the number of messages and jobs asking."""

    sessionmaker: async_sessionmaker[AsyncSession]
    ttl: float = 0.2  # seconds
    _seen: dict[uuid.UUID, tuple[float, str | None]] = field(default_factory=dict, init=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    async def state(self, campaign_id: uuid.UUID) -> str | None:
        seen = self._seen.get(campaign_id)
        if seen is not None and time.monotonic() - seen[0] < self.ttl:
            return seen[1]
        async with self._lock:
            seen = self._seen.get(campaign_id)  # another job may have just read it
            if seen is not None and time.monotonic() - seen[0] < self.ttl:
                return seen[1]
            async with transaction(self.sessionmaker) as session:
                found = await repository.get(session, campaign_id)
            now = time.monotonic()
            # Campaigns not asked about for a minute are forgotten: the map stays small.
            self._seen = {key: value for key, value in self._seen.items() if now - value[0] < 60}
            self._seen[campaign_id] = (now, found.state if found else None)
            return found.state if found else None


@dataclass(frozen=True, slots=True)
class ChunkReport:
    outcomes: dict[str, int]
    # Why it did not go through: paused, cancelled, budget (out of time), busy (the worker
    # runs CHUNKS_AT_ONCE already).
    stopped: str | None = None
    # Run the same job again in this many seconds: out of time with messages left, or busy.
    again_in: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {**self.outcomes, "stopped": self.stopped}


@dataclass
class CampaignSender:
    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: ArqRedis
    outbox: Outbox
    # Campaign messages this worker has in flight, across all its chunk jobs.
    gate: asyncio.Semaphore
    states: CampaignStates
    running: int = field(default=0, init=False)  # chunk jobs under way in this worker

    @classmethod
    def build(
        cls,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        redis: ArqRedis,
        outbox: Outbox,
    ) -> CampaignSender:
        return cls(
            settings,
            sessionmaker,
            redis,
            outbox,
            asyncio.Semaphore(settings.campaign_concurrency),
            CampaignStates(sessionmaker),
        )

    async def _active(self, campaign_id: uuid.UUID) -> bool:
        return await self.states.state(campaign_id) == CampaignState.ACTIVE

    async def send_chunk(self, campaign_id: uuid.UUID, chunk: int) -> ChunkReport:
        if self.running >= CHUNKS_AT_ONCE:
            return ChunkReport({}, stopped="busy", again_in=BUSY_RETRY_SECONDS)
        self.running += 1
        try:
            report = await self._send_chunk(campaign_id, chunk)
        finally:
            self.running -= 1
        if report.stopped in (None, "budget"):
            await self.top_up(campaign_id)
            await self.complete_if_done(campaign_id)
        return report

    async def _send_chunk(self, campaign_id: uuid.UUID, chunk: int) -> ChunkReport:
        started = time.monotonic()
        if not await self._active(campaign_id):
            return ChunkReport({}, stopped=await self.states.state(campaign_id) or "unknown")
        async with transaction(self.sessionmaker) as session:
            await repository.release_chunk(session, campaign_id, chunk, now=datetime.now(UTC))
        async with transaction(self.sessionmaker) as session:
            ids = await repository.chunk_to_send(
                session, campaign_id, chunk, limit=self.settings.campaign_chunk_size
            )
        outcomes: Counter[str] = Counter()
        retries: list[Pending] = []
        stopped: list[str] = []

        async def proceed() -> bool:
            """Asked before each create: a pause or cancel stops the chunk within the states'
            TTL, whatever the batch."""
            if stopped:
                return False
            if not await self._active(campaign_id):
                stopped.append(await self.states.state(campaign_id) or "unknown")
                return False
            if time.monotonic() - started > CHUNK_BUDGET_SECONDS:
                stopped.append("budget")
                return False
            return True

        under_way = asyncio.Semaphore(BATCHES_AT_ONCE)

        async def send(batch: list[uuid.UUID]) -> None:
            async with under_way:
                # Nothing may escape: the gather below would return at the first error while
                # the other batches went on sending.
                try:
                    if not await proceed():
                        return
                    result = await send_batch(self.outbox, batch, gate=self.gate, proceed=proceed)
                except Exception:  # claims not handed over run out, as a dead worker's would
                    logger.exception("campaign %s: sending a batch of chunk %s", campaign_id, chunk)
                    outcomes["error"] += len(batch)
                    return
            if result.errors:
                outcomes["error"] += result.errors
            for message_id, attempt in result.attempts.items():
                outcomes[attempt.outcome.value] += 1
                if attempt.outcome is Outcome.RETRY and attempt.retry_at is not None:
                    retries.append((message_id, attempt.retry_at))

        await asyncio.gather(
            *(send(ids[start : start + BATCH_SIZE]) for start in range(0, len(ids), BATCH_SIZE))
        )
        # A retry is a single message's job again, deferred to its time (the outbox's sweep
        # is the backstop), as send_message does it.
        await enqueue_pending(self.redis, retries)
        why = stopped[0] if stopped else None
        return ChunkReport(dict(outcomes), stopped=why, again_in=0 if why == "budget" else None)

    async def top_up(self, campaign_id: uuid.UUID) -> int:
        """Queues the lowest chunks with messages due, up to CAMPAIGN_PARALLEL_CHUNKS: those
        queued or running are refused by their job id, so the next chunk goes as one ends."""
        async with transaction(self.sessionmaker) as session:
            found = await repository.get(session, campaign_id)
            if found is None or found.state != CampaignState.ACTIVE:
                return 0
            chunks = await repository.chunks_to_start(
                session,
                campaign_id,
                now=datetime.now(UTC),
                limit=self.settings.campaign_parallel_chunks,
            )
        return await enqueue_chunks(self.redis, campaign_id, [(chunk, None) for chunk in chunks])

    async def complete_if_done(self, campaign_id: uuid.UUID) -> bool:
        async with transaction(self.sessionmaker) as session:
            return await repository.complete_if_done(session, campaign_id)

    async def sweep(self) -> dict[str, int]:
        """Every few seconds: running campaigns get their due chunks queued again (a Redis
        that lost its jobs loses no message; a night's held messages start in the morning)
        and are marked completed once nothing is left; cancellations cut short are finished;
        the counts' deltas are folded into their totals, so that reading them stays cheap."""
        report: Counter[str] = Counter()
        async with transaction(self.sessionmaker) as session:
            unfinished = await repository.unfinished(session)
        for campaign_id, state in unfinished:
            if state == CampaignState.CANCELLED:
                report["cancelled"] += await finish_cancelling(self.sessionmaker, campaign_id)
                continue
            report["chunks_enqueued"] += await self.top_up(campaign_id)
            report["completed"] += await self.complete_if_done(campaign_id)
        # Last: should it fail (a campaign deleted under it), the rest is done all the same.
        async with transaction(self.sessionmaker) as session:
            report["count_deltas_folded"] = await repository.fold_counts(session)
        return dict(report)
