"""Each sender's rate at Twilio (its MPS, in segments per second), shared by every worker.

One schedule per sender (the From number or the Messaging Service) lives in Redis and is kept
by a GCRA in one Lua script on Redis' own clock, so the workers' clocks do not matter: the
schedule is the sender's "theoretical arrival time" (TAT), the moment its next segment may
leave. A reservation of `count` segments takes the next `count` slots, one every
`interval_us`, and moves the TAT past them; whoever asks next, in this process or another,
gets the slots after those. That is what makes the limit fair across workers: no worker can
take a slot another already holds, and each reservation joins the end of the one schedule.

- Slots, not bursts: the tolerance is zero, so slots are exactly `interval_us` apart and no
  1-second window holds more than R of them. The interval is (1 + guard) / R rather than 1 / R:
  R + 1 consecutive slots then span 1 + guard seconds, so a slot released up to `guard` late
  (an event loop busy for a moment, a slow Redis answer) still cannot put R + 1 segments in one
  second. With the default 30 ms guard the sender runs at 97% of R.
- Later than that, a slot is given up. A send never goes before its slot, timed from the
  script's answer (a slow answer makes every slot of the batch a little late alike, never
  early); one that wakes more than `guard` after that time, its event loop busy meanwhile,
  reserves again instead of going, since going would crowd the slots after it. An event loop
  busy for 100 ms had put 108 segments in one second at R = 100 (bench.bulk). After
  MAX_ATTEMPTS such misses in a row, or once it has waited `max_wait_seconds`, the send goes
  anyway, counted: a process that cannot keep time at all must still send.
- Batches: a worker reserves for up to ~`lead_seconds` of the rate in one call (at least the
  segments of the message at the head of its queue) and hands those slots out, in order, to its
  own waiting sends; each waits until its own slot. Only as many slots as the process has sends
  waiting are reserved, so few are lost (a send cancelled while it waits loses its slots).
- Turns: a worker asks for its next batch only when its last one has at most `lead_seconds` to
  run. So each busy worker holds about one batch of the schedule at a time, their requests (and
  so their batches) alternate, and the queue of sends waits in each process, not in the shared
  schedule, which runs only about `lead_seconds` per busy worker ahead of now.
- One-time codes (`priority`) skip their process' queue: they reserve at once and take the next
  free slot, at the end of that short schedule (~0.1 s per busy worker away), however long the
  campaign queued behind. Codes count against the sender's MPS like everything else.
- Waiting is bounded: a send that would wait more than `max_wait_seconds` is refused with
  `SenderBusy` (the outbox retries the message later), at once when its process' own queue is
  already that long, so an arq job never sits out its timeout. A long backoff (below) refuses
  reservations whose first slot would be further away than that, codes' too.
- Twilio's 429 / 20429 / 14107 for a sender: `backoff()` pushes the sender's schedule back
  (1 s, doubling on each 429 that comes after the previous pause ended, up to 10 s; forgotten
  after a minute without one), for every worker at once. 429s answering requests sent before
  the pause began (all those in flight) do not double it.

A multi-segment message takes its segments' slots and goes at the first of them: Twilio sends
its segments one per slot from then, which is what its MPS counts. (Counted whole at the moment
of the request instead, a second holding a message of s segments can show up to R - 1 + s.)
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.core.settings import Settings
from app.outbox.metrics import SENDER_LIMIT_LATE, SENDER_LIMIT_WAIT
from app.twilio.errors import TwilioError

logger = logging.getLogger(__name__)

# Twilio's "slow down" answers: HTTP 429, 20429 (too many concurrent requests), 14107 (the
# account's send rate exceeded).
THROTTLED_CODES = frozenset({20429, 14107})

# All times are integer microseconds on Redis' clock (epoch), exact in Lua's doubles.
# KEYS: the sender's schedule (its TAT), its backoff (a hash: n, until).
# ARGV[1]: 'take' or 'backoff'; ARGV[2]: now, or '' for Redis' clock (tests pass their own).
# take (ARGV: count, interval, horizon): the next `count` slots if the first of them is at most
#   `horizon` away: {1, now, first slot}; else {0, now, when to ask again}.
# backoff (ARGV: base, cap, decay): pause the schedule: {1, now, until}; a pause still in force
#   is left as it is: {0, now, until}.
_SCRIPT = """
local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
end
local function schedule(tat)
  redis.call('SET', KEYS[1], string.format('%.0f', tat),
    'PX', math.ceil((tat - now) / 1000) + 1000)
end
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
if ARGV[1] == 'take' then
  local count, interval, horizon = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
  if tat - now > horizon then return {0, now, tat - horizon} end
  schedule(tat + count * interval)
  return {1, now, tat}
end
local base, cap, decay = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local pause_until = tonumber(redis.call('HGET', KEYS[2], 'until') or '0')
if now < pause_until then return {0, now, pause_until} end
local n = tonumber(redis.call('HGET', KEYS[2], 'n') or '0')
if now >= pause_until + decay then n = 0 end  -- quiet for a while: forgotten
n = n + 1
local pause = math.min(cap, base * 2 ^ (n - 1))
pause_until = now + pause
redis.call('HSET', KEYS[2], 'n', n, 'until', string.format('%.0f', pause_until))
redis.call('PEXPIRE', KEYS[2], math.ceil((pause + decay) / 1000))
schedule(math.max(tat, pause_until))
return {1, now, pause_until}
"""

_MICROS = 1_000_000
# When Redis cannot be reached: the message is retried this much later (by the outbox).
_UNAVAILABLE_RETRY_SECONDS = 1.0
# Slots one send may miss (woken too late to use them) before it goes late anyway.
MAX_ATTEMPTS = 3


def throttled(error: TwilioError) -> bool:
    """Twilio asks the sender to slow down (as opposed to refusing this one message)."""
    return error.status == 429 or error.code in THROTTLED_CODES


class SenderBusy(Exception):
    """The send would wait too long for its sender's slot: not sent, try again later."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"the sender's rate limit is busy; try again in {retry_after:.1f} s")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Reservation:
    """One call of the script: the first of the slots reserved, or (refused) when to ask again."""

    granted: bool
    now_us: int  # Redis' clock when the script ran
    at_us: int


@dataclass(frozen=True, slots=True)
class Grant:
    at: float  # the slot's time on Redis' clock (epoch seconds)
    waited: float  # seconds `acquire` took


@dataclass(frozen=True, slots=True)
class _Slot:
    """A reserved slot: `at_us` on Redis' clock; `go_at` on this process' clock, counted from
    the script's answer (it ran before that: never early)."""

    go_at: float
    at_us: int


@dataclass(eq=False, slots=True)
class _Waiter:
    segments: int
    slot: asyncio.Future[_Slot]  # set by the dispatcher


@dataclass(eq=False, slots=True)
class _Lane:
    """A sender's sends waiting in this process, in order, and the task reserving for them."""

    waiters: deque[_Waiter] = field(default_factory=deque)
    dispatcher: asyncio.Task[None] | None = None


class SenderLimit:
    def __init__(
        self,
        redis: Redis,
        segments_per_second: float,
        *,
        prefix: str = "sender_limit:",
        lead_seconds: float = 0.1,
        jitter_guard_seconds: float = 0.03,
        max_wait_seconds: float = 10.0,
        backoff_base_seconds: float = 1.0,
        backoff_cap_seconds: float = 10.0,
        backoff_decay_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        redis_clock: Callable[[], int] | None = None,
    ) -> None:
        """`clock`, `sleep` and `redis_clock` (microseconds, in place of Redis' TIME) are for
        tests, which move time themselves instead of waiting for it."""
        if segments_per_second <= 0:
            raise ValueError("segments_per_second must be positive (no limiter means none)")
        self.segments_per_second = segments_per_second
        self.interval_us = math.ceil(_MICROS * (1 + jitter_guard_seconds) / segments_per_second)
        self.guard_seconds = jitter_guard_seconds
        self.lead_us = round(lead_seconds * _MICROS)
        # Slots reserved at most in one call: ~`lead_seconds` of the rate.
        self.batch_max = max(1, round(self.lead_us / self.interval_us))
        self.max_wait_seconds = max_wait_seconds
        self.max_wait_us = round(max_wait_seconds * _MICROS)
        self._backoff_args = [
            round(backoff_base_seconds * _MICROS),
            round(backoff_cap_seconds * _MICROS),
            round(backoff_decay_seconds * _MICROS),
        ]
        self._prefix = prefix
        self._script = redis.register_script(_SCRIPT)
        self._clock = clock
        self._sleep = sleep
        self._redis_clock = redis_clock
        self._lanes: dict[str, _Lane] = {}

    @classmethod
    def from_settings(cls, settings: Settings, redis: Redis) -> SenderLimit | None:
        """None when SENDER_SEGMENTS_PER_SECOND is 0: no limit."""
        rate = settings.sender_segments_per_second
        return cls(redis, rate) if rate > 0 else None

    async def acquire(self, sender: str, segments: int = 1, *, priority: bool = False) -> Grant:
        """Waits for the sender's next free slots for `segments` segments. `priority` (one-time
        codes): straight to the end of the shared schedule, ahead of the sends queued here.
        Raises `SenderBusy` when the wait would exceed `max_wait_seconds`."""
        segments = max(1, segments)
        started = self._clock()
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                if priority:
                    slot = await self._reserve_now(sender, segments)
                else:
                    slot = await self._queue(sender, segments)
            except (RedisError, OSError) as error:
                logger.warning("sender limit unavailable (the message is retried): %r", error)
                raise SenderBusy(_UNAVAILABLE_RETRY_SECONDS) from error
            delay = slot.go_at - self._clock()
            if delay > 0:
                await self._sleep(delay)
            if self._clock() - slot.go_at <= self.guard_seconds:
                break
            if attempt == MAX_ATTEMPTS or self._clock() - started >= self.max_wait_seconds:
                SENDER_LIMIT_LATE.labels("went").inc()
                break
            SENDER_LIMIT_LATE.labels("missed").inc()
        waited = self._clock() - started
        SENDER_LIMIT_WAIT.labels("priority" if priority else "normal").observe(waited)
        return Grant(slot.at_us / _MICROS, waited)

    async def backoff(self, sender: str) -> float:
        """Twilio said slow down: every worker's next slot for this sender moves back. Returns
        the seconds until the sender's schedule resumes (0 if Redis could not be reached)."""
        try:
            _, now_us, until_us = await self._call(sender, "backoff", *self._backoff_args)
        except (RedisError, OSError) as error:
            logger.warning("could not back the sender off: %r", error)
            return 0.0
        return max(0, until_us - now_us) / _MICROS

    async def reserve(self, sender: str, count: int, *, horizon_us: int) -> Reservation:
        """One Redis call: the next `count` slots of the sender's shared schedule, unless the
        first of them is more than `horizon_us` away."""
        granted, now_us, at_us = await self._call(
            sender, "take", count, self.interval_us, horizon_us
        )
        return Reservation(bool(granted), now_us, at_us)

    async def _call(self, sender: str, operation: str, *args: int) -> tuple[int, int, int]:
        now = "" if self._redis_clock is None else str(self._redis_clock())
        # One hash slot for both keys (Redis Cluster): the sender in braces.
        base = f"{self._prefix}{{{sender}}}"
        result = await self._script(
            keys=[f"{base}:schedule", f"{base}:backoff"], args=[operation, now, *args]
        )
        return int(result[0]), int(result[1]), int(result[2])

    async def _reserve_now(self, sender: str, segments: int) -> _Slot:
        reservation = await self.reserve(sender, segments, horizon_us=self.max_wait_us)
        answered = self._clock()
        if not reservation.granted:
            raise SenderBusy((reservation.at_us - reservation.now_us) / _MICROS)
        ahead = (reservation.at_us - reservation.now_us) / _MICROS
        return _Slot(answered + ahead, reservation.at_us)

    async def _queue(self, sender: str, segments: int) -> _Slot:
        lane = self._lanes.setdefault(sender, _Lane())
        ahead_us = sum(waiter.segments for waiter in lane.waiters) * self.interval_us
        if ahead_us > self.max_wait_us:  # not worth waiting to learn it
            raise SenderBusy(ahead_us / _MICROS)
        waiter = _Waiter(segments, asyncio.get_running_loop().create_future())
        lane.waiters.append(waiter)
        if lane.dispatcher is None:
            lane.dispatcher = asyncio.create_task(self._dispatch(sender, lane))
        try:
            await asyncio.wait({waiter.slot}, timeout=self.max_wait_us / _MICROS)
        finally:
            if waiter in lane.waiters:  # timed out or cancelled before its turn came
                lane.waiters.remove(waiter)
        if not waiter.slot.done():
            raise SenderBusy(self.max_wait_us / _MICROS)
        return waiter.slot.result()

    async def _dispatch(self, sender: str, lane: _Lane) -> None:
        """Reserves slots for this process' waiting sends, in order, one batch per call, while
        there are any; the next batch when the last one has at most `lead_seconds` to run."""
        try:
            while lane.waiters:
                batch = self._head(lane)
                count = sum(waiter.segments for waiter in batch)
                try:
                    reservation = await self.reserve(sender, count, horizon_us=self.max_wait_us)
                except (RedisError, OSError) as error:
                    self._fail_all(lane, error)
                    return
                answered = self._clock()
                now_us = reservation.now_us
                if not reservation.granted:  # a long backoff: ask when it nears its end
                    await self._sleep((reservation.at_us - now_us) / _MICROS)
                    continue
                slot_us = reservation.at_us
                for waiter in batch:
                    if waiter in lane.waiters:  # else it gave up meanwhile: its slots are lost
                        lane.waiters.remove(waiter)
                        ahead = (slot_us - now_us) / _MICROS
                        waiter.slot.set_result(_Slot(answered + ahead, slot_us))
                    slot_us += waiter.segments * self.interval_us
                # One batch ahead at a time: the next is asked for when this one nears its end,
                # so that the workers' requests, and so their batches, take turns.
                if lane.waiters and slot_us - now_us > self.lead_us:
                    await self._sleep((slot_us - now_us - self.lead_us) / _MICROS)
        finally:
            lane.dispatcher = None

    def _head(self, lane: _Lane) -> list[_Waiter]:
        """The first waiters whose segments fit in one batch (the first one always)."""
        batch: list[_Waiter] = []
        total = 0
        for waiter in lane.waiters:
            if batch and total + waiter.segments > self.batch_max:
                break
            batch.append(waiter)
            total += waiter.segments
        return batch

    @staticmethod
    def _fail_all(lane: _Lane, error: BaseException) -> None:
        logger.warning("sender limit unavailable (messages are retried): %r", error)
        for waiter in lane.waiters:
            if not waiter.slot.done():
                busy = SenderBusy(_UNAVAILABLE_RETRY_SECONDS)
                busy.__cause__ = error
                waiter.slot.set_exception(busy)
        lane.waiters.clear()
