"""The per-sender rate limit (SENDER_SEGMENTS_PER_SECOND): one GCRA schedule per sender in real
Redis, shared by every worker process.

Time is virtual here: the limiter takes its clock, its sleep and Redis' "now" from the test
(the script's optional now argument), so seconds of sending take milliseconds and every slot
time is exact. The Lua script, the batching and the hand-out are the real ones. Each test has
keys of its own (the test Redis is shared with other runs: nothing is flushed)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis.asyncio
import respx
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.codes.models import Verification
from app.core.crypto import PhoneCipher
from app.core.database import transaction
from app.core.settings import Settings
from app.outbox.sender_limit import Grant, Reservation, SenderBusy, SenderLimit
from app.outbox.service import Outbox, Outcome
from app.preferences import repository as preferences_repository
from app.users.models import User
from tests.sending_support import TO, add_message, created, load, new_sid, twilio_base, twilio_error
from tests.stack import redis_url_for_db

SENDER = "+15005550006"
SECOND_US = 1_000_000
# A start far from the real clock: nothing here depends on when the test runs.
EPOCH = 1_900_000_000.0


class VirtualTime:
    """One clock for the limiters of a test and for the script's "now", moved by a driver task
    as a discrete-event simulation: when no Redis call is in flight and the loop has settled,
    time jumps to the earliest sleeper's deadline and wakes it. So time never passes while a
    reservation is on its way, whatever the machine's load, and no sleeper wakes late."""

    # Loop turns without a Redis call in flight before time may move: the work a wake-up sets
    # off (a grant, the next acquire, a dispatcher's next call) starts within a few turns.
    SETTLED_TURNS = 50

    def __init__(self) -> None:
        self.now = EPOCH
        self.in_flight = 0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def clock(self) -> float:
        return self.now

    def redis_clock(self) -> int:
        return round(self.now * SECOND_US)

    async def sleep(self, seconds: float) -> None:
        woken = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), next(self._order), woken))
        await woken

    async def drive(self) -> None:
        while True:
            settled = 0
            while settled < self.SETTLED_TURNS:
                await asyncio.sleep(0)
                settled = settled + 1 if self.in_flight == 0 else 0
            if not self._sleepers:
                await asyncio.sleep(0.001)
                continue
            deadline = self._sleepers[0][0]
            self.now = max(self.now, deadline)
            while self._sleepers and self._sleepers[0][0] <= self.now:
                _, _, woken = heapq.heappop(self._sleepers)
                if not woken.done():  # its sleeper may have been cancelled
                    woken.set_result(None)


class CountingLimit(SenderLimit):
    """Counts its Redis calls for reservations, and tells virtual time when one is in flight."""

    calls = 0
    vt: VirtualTime | None = None

    async def reserve(self, sender: str, count: int, *, horizon_us: int) -> Reservation:
        self.calls += 1
        return await super().reserve(sender, count, horizon_us=horizon_us)

    async def _call(self, sender: str, operation: str, *args: int) -> tuple[int, int, int]:
        if self.vt is None:
            return await super()._call(sender, operation, *args)
        self.vt.in_flight += 1
        try:
            return await super()._call(sender, operation, *args)
        finally:
            self.vt.in_flight -= 1


# A db of its own on the test server (the e2e modules' are 10 to 12, the tests' 15): other tests
# FLUSHDB theirs, which in a run beside this one would wipe a schedule in the middle of a test.
SENDER_LIMIT_DB = 9


@pytest.fixture
async def redis_db(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    redis_url = redis_url_for_db(redis_url, SENDER_LIMIT_DB)
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis_db: redis.asyncio.Redis) -> AsyncIterator[str]:
    """Keys of this test's own; removed afterwards (they would expire anyway)."""
    own = f"test-sender-limit:{uuid.uuid4().hex}:"
    yield own
    keys = [key async for key in redis_db.scan_iter(match=f"{own}*")]
    if keys:
        await redis_db.delete(*keys)


@pytest.fixture
async def vt() -> AsyncIterator[VirtualTime]:
    time = VirtualTime()
    driver = asyncio.create_task(time.drive())
    yield time
    driver.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await driver


MakeLimit = Callable[..., CountingLimit]
MakeOutbox = Callable[[float], tuple[Outbox, "RecordingLimit"]]


@pytest.fixture
def make_limit(redis_db: redis.asyncio.Redis, prefix: str, vt: VirtualTime) -> MakeLimit:
    """A limiter (a "worker") on the test's keys and virtual time; several share the schedule."""

    def make(
        rate: float, kind: type[CountingLimit] = CountingLimit, **options: Any
    ) -> CountingLimit:
        timing = {"clock": vt.clock, "sleep": vt.sleep, "redis_clock": vt.redis_clock}
        limit = kind(redis_db, rate, prefix=prefix, **{**timing, **options})
        limit.vt = vt
        return limit

    return make


def busiest_window(times_us: list[int]) -> int:
    """The most slots in any 1-second window (t - 1 s, t]."""
    ordered = sorted(times_us)
    best = start = 0
    for end, at in enumerate(ordered):
        while ordered[start] <= at - SECOND_US:
            start += 1
        best = max(best, end - start + 1)
    return best


def us(grant: Grant) -> int:
    return round(grant.at * SECOND_US)


FAR = 3600 * SECOND_US  # a horizon that refuses nothing


# --- the script: slots of one shared schedule ----------------------------------------------


async def test_reservations_take_the_next_slots_exactly_one_interval_apart(
    make_limit: MakeLimit, vt: VirtualTime
) -> None:
    exact = make_limit(10, jitter_guard_seconds=0)
    assert exact.interval_us == 100_000  # 1/R

    slots = [(await exact.reserve(SENDER, 1, horizon_us=FAR)).at_us for _ in range(20)]
    three = await exact.reserve(SENDER, 3, horizon_us=FAR)
    after = await exact.reserve(SENDER, 1, horizon_us=FAR)

    start = vt.redis_clock()
    assert slots == [start + n * 100_000 for n in range(20)]
    assert three.at_us == start + 20 * 100_000
    assert after.at_us == start + 23 * 100_000  # three slots for three segments
    # With the default guard the slots are 3% further apart: R + 1 of them span 1.03 s.
    assert make_limit(10).interval_us == 103_000
    assert make_limit(100).interval_us == 10_300


async def test_an_idle_sender_starts_now_and_keeps_no_credit(
    make_limit: MakeLimit, vt: VirtualTime
) -> None:
    limit = make_limit(10, jitter_guard_seconds=0)
    first = await limit.reserve(SENDER, 1, horizon_us=FAR)
    vt.now += 5  # idle for five seconds
    later = [(await limit.reserve(SENDER, 1, horizon_us=FAR)).at_us for _ in range(3)]

    assert first.at_us == round(EPOCH * SECOND_US)
    # No burst after the pause: no tolerance, so idle time is not saved up.
    assert later == [vt.redis_clock() + n * 100_000 for n in range(3)]


async def test_a_reservation_too_far_ahead_is_refused_with_when_to_ask(
    make_limit: MakeLimit, vt: VirtualTime
) -> None:
    limit = make_limit(10, jitter_guard_seconds=0)
    for _ in range(5):
        await limit.reserve(SENDER, 1, horizon_us=FAR)  # the schedule runs 0.5 s ahead

    refused = await limit.reserve(SENDER, 1, horizon_us=200_000)
    granted = await limit.reserve(SENDER, 1, horizon_us=500_000)

    now = vt.redis_clock()
    assert (refused.granted, refused.at_us) == (False, now + 300_000)  # then it is 0.2 s ahead
    assert (granted.granted, granted.at_us) == (True, now + 500_000)


async def test_two_workers_reserving_at_once_share_one_schedule_without_gaps_or_overlap(
    make_limit: MakeLimit, vt: VirtualTime
) -> None:
    one, two = make_limit(100), make_limit(100)

    async def reserve(limit: SenderLimit) -> int:
        return (await limit.reserve(SENDER, 1, horizon_us=FAR)).at_us

    slots = await asyncio.gather(*(reserve(limit) for limit in [one, two] * 100))

    start = vt.redis_clock()
    assert sorted(slots) == [start + n * one.interval_us for n in range(200)]


# --- acquire: many sends in two workers ------------------------------------------------------


@pytest.mark.parametrize("rate", [10, 100])
async def test_two_busy_workers_never_exceed_r_in_any_second_and_get_95_percent_of_it(
    make_limit: MakeLimit, vt: VirtualTime, rate: int
) -> None:
    workers = [make_limit(rate), make_limit(rate)]
    seconds = 5
    end = EPOCH + seconds
    granted: dict[int, list[int]] = {0: [], 1: []}

    async def sends(worker: int) -> None:
        while vt.now < end:
            grant = await workers[worker].acquire(SENDER, 1)
            if grant.at < end:
                granted[worker].append(us(grant))

    await asyncio.gather(*(sends(worker) for worker in (0, 1) for _ in range(20)))

    every = granted[0] + granted[1]
    assert len(set(every)) == len(every)  # no slot given twice
    assert busiest_window(every) <= rate
    achieved = len(every) / (rate * seconds)
    assert 0.95 <= achieved <= 1
    # Fair: each worker got about half.
    assert abs(len(granted[0]) - len(granted[1])) <= 0.1 * len(every)


async def test_sends_woken_late_by_a_busy_event_loop_give_up_their_slots(
    make_limit: MakeLimit, vt: VirtualTime
) -> None:
    """Both workers' loops busy for 200 ms: every sleep due meanwhile ends with it. Sent then,
    those sends would go together with the slots after them, ~20 segments over R in the
    second that follows; they reserve again instead."""
    rate, seconds = 100, 3
    busy_from, busy_until = EPOCH + 1.0, EPOCH + 1.2

    async def busy_loop_sleep(duration: float) -> None:
        if busy_from <= vt.now + duration < busy_until:
            duration = busy_until - vt.now
        await vt.sleep(duration)

    workers = [make_limit(rate, sleep=busy_loop_sleep) for _ in range(2)]
    end = EPOCH + seconds
    went: list[int] = []  # when each send went, on the virtual clock

    async def sends(worker: SenderLimit) -> None:
        while vt.now < end:
            await worker.acquire(SENDER, 1)
            if vt.now < end:
                went.append(vt.redis_clock())

    missed = REGISTRY.get_sample_value("sms_sender_limit_late_total", {"outcome": "missed"})
    await asyncio.gather(*(sends(worker) for worker in workers for _ in range(20)))

    assert busiest_window(went) <= rate
    # Only the slots of the busy 200 ms are lost: 95% of R the rest of the time.
    assert len(went) >= 0.95 * rate * (seconds - 0.2)
    missed_now = REGISTRY.get_sample_value("sms_sender_limit_late_total", {"outcome": "missed"})
    assert (missed_now or 0) - (missed or 0) >= 10


class SlowAnswerLimit(CountingLimit):
    """Redis answers 35 ms after the script ran (more than the 30 ms guard)."""

    async def reserve(self, sender: str, count: int, *, horizon_us: int) -> Reservation:
        reservation = await super().reserve(sender, count, horizon_us=horizon_us)
        assert self.vt is not None
        await self.vt.sleep(0.035)
        return reservation


async def test_slow_answers_from_redis_make_sends_late_alike_and_miss_nothing(
    make_limit: MakeLimit, vt: VirtualTime
) -> None:
    """Every slot of a slow answer is late by the same 35 ms: nothing crowds, so nothing is
    given up (reserving again could only be as slow)."""
    rate, seconds = 100, 3
    workers = [make_limit(rate, kind=SlowAnswerLimit) for _ in range(2)]
    end = EPOCH + seconds
    went: list[int] = []

    async def sends(worker: SenderLimit) -> None:
        while vt.now < end:
            await worker.acquire(SENDER, 1)
            if vt.now < end:
                went.append(vt.redis_clock())

    late = {
        outcome: REGISTRY.get_sample_value("sms_sender_limit_late_total", {"outcome": outcome})
        for outcome in ("missed", "went")
    }
    await asyncio.gather(*(sends(worker) for worker in workers for _ in range(20)))

    assert busiest_window(went) <= rate
    assert len(went) >= 0.95 * rate * (seconds - 0.1)
    for outcome, before in late.items():
        after = REGISTRY.get_sample_value("sms_sender_limit_late_total", {"outcome": outcome})
        assert (after or 0) == (before or 0), outcome


async def test_a_thousand_sends_at_1000_per_second_cost_a_few_redis_calls(
    make_limit: MakeLimit,
) -> None:
    limit = make_limit(1000)
    assert limit.batch_max == 97  # ~100 ms of the rate per call

    grants = await asyncio.gather(*(limit.acquire(SENDER, 1) for _ in range(1000)))

    assert len({us(grant) for grant in grants}) == 1000
    assert limit.calls <= -(-1000 // limit.batch_max) + 1  # 11 batches, and at most one more
    assert busiest_window([us(grant) for grant in grants]) <= 1000


async def test_a_lone_send_reserves_only_its_own_slot(make_limit: MakeLimit) -> None:
    one, other = make_limit(1000), make_limit(1000)

    mine = await one.acquire(SENDER, 1)
    next_free = await other.reserve(SENDER, 1, horizon_us=FAR)

    # One waiting send, one slot: batching reserves what is waiting, never ~100 ms of slots.
    assert next_free.at_us == us(mine) + one.interval_us


async def test_a_multi_segment_message_takes_its_segments_slots(
    make_limit: MakeLimit, vt: VirtualTime
) -> None:
    limit = make_limit(10, jitter_guard_seconds=0)

    three = await limit.acquire(SENDER, 3)
    one = await limit.acquire(SENDER, 1)

    assert us(one) - us(three) == 3 * 100_000


async def test_a_message_bigger_than_a_batch_still_goes_and_the_next_waits_for_it(
    make_limit: MakeLimit,
) -> None:
    limit = make_limit(100, jitter_guard_seconds=0)
    assert limit.batch_max == 10

    big, small, smaller = await asyncio.gather(
        limit.acquire(SENDER, 25), limit.acquire(SENDER, 1), limit.acquire(SENDER, 1)
    )

    assert us(small) - us(big) == 25 * 10_000
    assert us(smaller) - us(small) == 10_000


# --- one-time codes: the same schedule, not the back of the queue ----------------------------


async def test_a_code_takes_the_next_slot_while_a_campaign_queues_behind(
    make_limit: MakeLimit, vt: VirtualTime
) -> None:
    campaign_worker, code_worker = make_limit(10), make_limit(10)
    campaign = [
        asyncio.create_task(campaign_worker.acquire(SENDER, 1, priority=False)) for _ in range(40)
    ]
    await asyncio.wait(campaign[:10])  # the campaign under way for a second

    asked = vt.now
    code = await code_worker.acquire(SENDER, 1, priority=True)
    bulk = await asyncio.gather(*campaign)

    interval = campaign_worker.interval_us / SECOND_US
    # At most the lead (0.1 s) and a slot or two ahead of it, not the 3 s of campaign queued.
    assert code.at - asked <= 0.1 + 2 * interval
    assert max(grant.at for grant in bulk) - asked > 2.5
    # The code took a slot of the schedule, not one on top of it.
    every = [us(grant) for grant in [*bulk, code]]
    assert len(set(every)) == 41
    assert busiest_window(every) <= 10


async def test_a_send_that_would_wait_too_long_is_refused_at_once(
    make_limit: MakeLimit, vt: VirtualTime
) -> None:
    limit = make_limit(10, max_wait_seconds=0.5)

    outcomes = await asyncio.gather(
        *(limit.acquire(SENDER, 1) for _ in range(10)), return_exceptions=True
    )

    busy = [outcome for outcome in outcomes if isinstance(outcome, SenderBusy)]
    grants = [outcome for outcome in outcomes if isinstance(outcome, Grant)]
    # The fifth has four ahead of it (0.41 s); the sixth five (0.52 s): refused at once, and
    # told when the queue ahead of it will have gone; so are the rest.
    assert len(grants) == 5
    assert [round(refusal.retry_after, 3) for refusal in busy] == [0.515] * 5
    assert max(grant.waited for grant in grants) == pytest.approx(0.412)


async def test_a_code_is_refused_rather_than_held_past_the_longest_wait(
    make_limit: MakeLimit, vt: VirtualTime
) -> None:
    limit = make_limit(10, max_wait_seconds=2, backoff_base_seconds=5)
    await limit.backoff(SENDER)

    with pytest.raises(SenderBusy) as refused:
        await limit.acquire(SENDER, 1, priority=True)

    assert refused.value.retry_after == pytest.approx(3)  # when its slot comes within 2 s


# --- 429: every worker slows down ------------------------------------------------------------


async def test_a_429_in_one_worker_pushes_back_every_workers_next_slot(
    make_limit: MakeLimit, vt: VirtualTime
) -> None:
    throttled, other = make_limit(10), make_limit(10)

    pause = await throttled.backoff(SENDER)
    grant = await other.acquire(SENDER, 1)

    assert pause == 1.0
    assert grant.at == EPOCH + 1.0
    assert grant.waited == pytest.approx(1.0)


async def test_repeated_429s_double_the_pause_up_to_a_cap_and_then_it_decays(
    make_limit: MakeLimit, vt: VirtualTime
) -> None:
    limit = make_limit(10)

    async def throttled_after_the_pause() -> float:
        pause = await limit.backoff(SENDER)
        vt.now += pause
        return pause

    pauses = [await throttled_after_the_pause() for _ in range(6)]
    vt.now += 61  # a minute without a 429
    after_a_quiet_minute = await limit.backoff(SENDER)

    assert pauses == [1, 2, 4, 8, 10, 10]
    assert after_a_quiet_minute == 1


async def test_429s_answering_requests_sent_before_the_pause_do_not_double_it(
    make_limit: MakeLimit, vt: VirtualTime
) -> None:
    one, two = make_limit(10), make_limit(10)

    first = await one.backoff(SENDER)
    vt.now += 0.2
    # Other sends already in flight come back 429 too, in both workers.
    more = await asyncio.gather(*(limit.backoff(SENDER) for limit in [one, two] * 5))

    assert first == 1
    assert more == [pytest.approx(0.8)] * 10  # what is left of the same pause


async def test_on_redis_own_clock_and_real_sleeps_sends_go_one_slot_apart(
    redis_db: redis.asyncio.Redis, prefix: str
) -> None:
    """The production path, without virtual time: Redis' TIME and asyncio.sleep (0.5 s)."""
    one, two = (SenderLimit(redis_db, 50, prefix=prefix) for _ in range(2))
    started = time.monotonic()

    grants = await asyncio.gather(*(limit.acquire(SENDER, 1) for limit in [one, two] * 13))

    took = time.monotonic() - started
    slots = sorted(us(grant) for grant in grants)
    assert [later - earlier for earlier, later in itertools.pairwise(slots)] == [20_600] * 25
    assert took >= 25 * 0.0206 - 0.01  # every send waited for its slot
    assert max(grant.waited for grant in grants) == pytest.approx(took, abs=0.05)


async def test_without_redis_a_send_is_busy_and_a_backoff_is_skipped() -> None:
    nowhere = redis.asyncio.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    limit = SenderLimit(nowhere, 10)
    try:
        with pytest.raises(SenderBusy):
            await limit.acquire(SENDER, 1)
        with pytest.raises(SenderBusy):
            await limit.acquire(SENDER, 1, priority=True)
        assert await limit.backoff(SENDER) == 0
    finally:
        await nowhere.aclose()


# --- the outbox's hook ------------------------------------------------------------------------


@pytest.fixture
def api(settings: Settings) -> Iterator[respx.MockRouter]:
    """Twilio, as respx: any request without a route fails the test."""
    with respx.mock(base_url=twilio_base(settings), assert_all_called=False) as router:
        yield router


class RecordingLimit(CountingLimit):
    asked: list[tuple[str, int, bool]]

    async def acquire(self, sender: str, segments: int = 1, *, priority: bool = False) -> Grant:
        self.asked.append((sender, segments, priority))
        return await super().acquire(sender, segments, priority=priority)


@pytest.fixture
def limited(
    outbox: Outbox, redis_db: redis.asyncio.Redis, prefix: str, vt: VirtualTime
) -> MakeOutbox:
    def make(rate: float) -> tuple[Outbox, RecordingLimit]:
        limit = RecordingLimit(
            redis_db,
            rate,
            prefix=prefix,
            clock=vt.clock,
            sleep=vt.sleep,
            redis_clock=vt.redis_clock,
        )
        limit.asked = []
        limit.vt = vt
        return dataclasses.replace(outbox, sender_limit=limit), limit

    return make


async def test_sends_at_five_per_second_reach_twilio_one_slot_apart(
    limited: MakeOutbox,
    api: respx.MockRouter,
    vt: VirtualTime,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    outbox, limit = limited(5)
    arrived: list[float] = []

    def twilio_answers(request: httpx.Request) -> httpx.Response:
        arrived.append(vt.now)
        return created(new_sid())

    api.post("/Messages.json").mock(side_effect=twilio_answers)
    ids = [await add_message(sessionmaker, cipher, body=f"hello {n}") for n in range(10)]
    ids.append(await add_message(sessionmaker, cipher, body="x" * 200, segments=2))
    ids.append(await add_message(sessionmaker, cipher, body="after two segments"))

    outcomes = [(await outbox.send(message_id)).outcome for message_id in ids]

    assert outcomes == [Outcome.ACCEPTED] * 12
    slot = limit.interval_us / SECOND_US  # 1/5 s, and 3%
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrived)]
    assert gaps == [pytest.approx(slot, abs=1e-5)] * 10 + [pytest.approx(2 * slot, abs=1e-5)]
    assert arrived[9] - arrived[0] >= 1.8  # ten sends at 5/s
    assert limit.asked[0] == (SENDER, 1, False)  # the account's From number
    assert limit.asked[-2] == (SENDER, 2, False)  # a message's segments


async def test_a_429_from_twilio_backs_the_sender_off_for_every_worker(
    limited: MakeOutbox,
    make_limit: MakeLimit,
    api: respx.MockRouter,
    vt: VirtualTime,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    outbox, limit = limited(10)
    other_worker = make_limit(10)  # another process, on the same schedule
    api.post("/Messages.json").mock(
        side_effect=[twilio_error(429, 20429, "Too Many Requests"), twilio_error(400, 21211)]
    )
    throttled = await add_message(sessionmaker, cipher)
    refused = await add_message(sessionmaker, cipher)

    assert (await outbox.send(throttled)).outcome is Outcome.RETRY
    after_429 = await other_worker.reserve(SENDER, 1, horizon_us=FAR)
    assert after_429.at_us - after_429.now_us == SECOND_US  # paused for a second
    vt.now += 2
    assert (await outbox.send(refused)).outcome is Outcome.FAILED  # 21211: no backoff
    after_400 = await other_worker.reserve(SENDER, 1, horizon_us=FAR)
    assert after_400.at_us - after_400.now_us < limit.interval_us * 2
    retried = await load(sessionmaker, throttled)
    assert (retried.lease_until, retried.error_code) == (None, 20429)  # a retry, later


async def test_a_send_the_limit_cannot_serve_is_retried_and_not_sent(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    nowhere = redis.asyncio.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    create = api.post("/Messages.json").mock(return_value=created(new_sid()))
    message_id = await add_message(sessionmaker, cipher)
    try:
        blind = dataclasses.replace(outbox, sender_limit=SenderLimit(nowhere, 10))
        attempt = await blind.send(message_id)
    finally:
        await nowhere.aclose()

    assert attempt.outcome is Outcome.RETRY
    assert create.call_count == 0
    held = await load(sessionmaker, message_id)
    assert held.lease_until is None
    assert held.next_attempt_at > datetime.now(UTC)
    assert "rate limit" in (held.error_message or "")


async def test_a_code_goes_through_the_priority_lane(
    limited: MakeOutbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    outbox, limit = limited(10)
    api.post("/Messages.json").mock(return_value=created(new_sid()))
    now = datetime.now(UTC)
    async with transaction(sessionmaker) as writing:
        user = User(
            external_id=f"sender-limit-{uuid.uuid4().hex[:8]}",
            phone_encrypted=cipher.encrypt(TO),
            phone_index=cipher.blind_index(TO),
            phone_region="US",
            phone_verified_at=now,
        )
        writing.add(user)
        await writing.flush()
        user_id = user.id
        await preferences_repository.create_defaults(writing, [user_id])
    message_id = await add_message(
        sessionmaker, cipher, body="", category="one_time_code", user_id=user_id
    )
    async with transaction(sessionmaker) as writing:
        writing.add(
            Verification(
                user_id=user_id,
                purpose="two_factor",
                phone_index=cipher.blind_index(TO),
                message_id=message_id,
                expires_at=now + timedelta(minutes=10),
            )
        )

    assert (await outbox.send(message_id)).outcome is Outcome.ACCEPTED
    assert limit.asked == [(SENDER, 1, True)]
