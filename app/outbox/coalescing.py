"""Send jobs that run at once in one worker, sent together.

arq runs one `send_message` job per message (its id is the message id, so a message is never
queued twice). Sent one by one, each costs two transactions and ~9 round trips to the
database; a worker busy with reminders or single sends then spent its time there, not at
Twilio. Instead each job hands its message to this coalescer and waits for its own outcome: the jobs
arq starts within GATHER_SECONDS of each other (one poll's worth) go together in one batch
(app/outbox/batch.py: a few statements for the lot, each message's attempt and outcome as the
single path makes them). A batch of one costs ~8 round trips; reminders falling due a few per
poll went out that way, at a fraction of the campaign path's rate.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from app.outbox.batch import BATCH_SIZE, send_batch
from app.outbox.service import Attempt, Outbox, Outcome

logger = logging.getLogger(__name__)

# How long a batch waits for more jobs before it is claimed: arq starts the jobs of one poll a
# few Redis round trips apart. What a message waits here is small beside a create at Twilio.
GATHER_SECONDS = 0.01
# Batches under way at once (each holds a database connection while it claims or records).
BATCHES_AT_ONCE = 4


class AttemptLost(Exception):
    """The message's attempt raised (logged where it did): its claim runs out, as a dead
    worker's, and the sweeper queues it again."""


@dataclass(eq=False)
class SendCoalescer:
    outbox: Outbox
    # Creates in flight at Twilio, across the batches: as many as the jobs arq runs at once.
    gate: asyncio.Semaphore
    _waiting: list[tuple[uuid.UUID, bool, asyncio.Future[Attempt]]] = field(
        default_factory=list, init=False
    )
    _gathering: bool = field(default=False, init=False)
    _running: int = field(default=0, init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    @classmethod
    def build(cls, outbox: Outbox, in_flight: int) -> SendCoalescer:
        return cls(outbox, asyncio.Semaphore(in_flight))

    async def send(self, message_id: uuid.UUID, *, release: bool = False) -> Attempt:
        """Outbox.send's outcome for this message. `release`: it may still be scheduled."""
        done: asyncio.Future[Attempt] = asyncio.get_running_loop().create_future()
        self._waiting.append((message_id, release, done))
        self._gather()
        return await done

    def _gather(self) -> None:
        """One batch at a time gathers the jobs arriving; it goes once it is full or its
        time is up, and the next arrival starts the next one."""
        if self._gathering or not self._waiting or self._running >= BATCHES_AT_ONCE:
            return
        self._gathering = True
        self._running += 1
        task = asyncio.create_task(self._gather_and_send())
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    async def _gather_and_send(self) -> None:
        try:
            try:
                if len(self._waiting) < BATCH_SIZE:
                    await asyncio.sleep(GATHER_SECONDS)
                batch = self._waiting[:BATCH_SIZE]
                del self._waiting[:BATCH_SIZE]
            finally:
                self._gathering = False
            self._gather()  # more than a batch waiting, or arriving from now on
            await self._send(batch)
        finally:
            self._running -= 1
            self._gather()

    async def _send(self, batch: list[tuple[uuid.UUID, bool, asyncio.Future[Attempt]]]) -> None:
        try:
            result = await send_batch(
                self.outbox,
                [message_id for message_id, _, _ in batch],
                gate=self.gate,
                lanes=len(batch),
                release=[message_id for message_id, release, _ in batch if release],
            )
        except Exception as error:  # the claim rolled back: every message waits, untouched
            logger.exception("sending a batch of %d messages", len(batch))
            for _, _, done in batch:
                if not done.done():
                    done.set_exception(error)
        else:
            given_back = set(result.given_back)
            for message_id, _, done in batch:
                if done.done():  # its job was cancelled (arq's timeout, a shutdown)
                    continue
                attempt = result.attempts.get(message_id)
                if attempt is not None:
                    done.set_result(attempt)
                elif message_id in given_back:  # its claim grew too old to start: again now
                    done.set_result(Attempt(Outcome.RETRY, datetime.now(UTC)))
                else:
                    done.set_exception(AttemptLost(f"message {message_id}: see the log"))
