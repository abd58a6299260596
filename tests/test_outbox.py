"""The outbox: claiming a message, handing it to Twilio exactly once, and what each of Twilio's
answers does to it (retry with backoff, reconcile before any resend, fail, suppress)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import redis.asyncio
import respx
from arq import Retry
from arq.connections import ArqRedis
from arq.jobs import Job
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.auth.principal import Scope
from app.core.crypto import PhoneCipher
from app.core.database import create_sessionmaker, transaction
from app.core.redis import create_redis
from app.core.settings import SANDBOX_ACCOUNT_SID, Settings
from app.messages.models import Message
from app.messages.status import Status
from app.optouts import service as optouts
from app.outbox import repository as outbox_repository
from app.outbox import tasks
from app.outbox.coalescing import SendCoalescer
from app.outbox.service import Outbox, Outcome
from app.twilio.client import TwilioClient
from tests.sending_support import (
    OTHER,
    TO,
    add_message,
    consents,
    created,
    event_rows,
    events,
    is_suppressed,
    load,
    make_due,
    new_sid,
    page,
    resource,
    set_columns,
    twilio_base,
    twilio_error,
)

# The outbox's backoff: SEND_RETRY_BASE_SECONDS (60 s for a full sender queue), doubling per
# attempt up to SEND_RETRY_CAP_SECONDS, each delay drawn in [ceiling / 2, ceiling].
QUEUE_FULL_BASE_SECONDS = 60.0

Answer = Callable[[], httpx.Response | Exception]


@pytest.fixture
def api(settings: Settings) -> Iterator[respx.MockRouter]:
    """Twilio, as respx: any request without a route fails the test."""
    with respx.mock(base_url=twilio_base(settings), assert_all_called=False) as router:
        yield router


def form(request: httpx.Request) -> dict[str, str]:
    return dict(parse_qsl(request.content.decode()))


def now() -> datetime:
    return datetime.now(UTC)


# --- the happy path ------------------------------------------------------------------------


async def test_a_queued_message_is_claimed_then_created_at_twilio(
    outbox: Outbox,
    api: respx.MockRouter,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    message_id = await add_message(sessionmaker, cipher, body="Your booking is confirmed")
    await set_columns(sessionmaker, message_id, expires_at=now() + timedelta(seconds=600))
    sid = new_sid()
    seen_while_asking: dict[str, Any] = {}

    async def twilio_answers(request: httpx.Request) -> httpx.Response:
        held = await load(sessionmaker, message_id)
        seen_while_asking.update(
            status=held.status,
            attempts=held.attempts,
            leased=held.lease_until is not None,
            events=await events(sessionmaker, message_id),
        )
        return created(sid, status="queued", body="Your booking is confirmed")

    create = api.post("/Messages.json").mock(side_effect=twilio_answers)

    attempt = await outbox.send(message_id)

    assert attempt.outcome is Outcome.ACCEPTED
    assert seen_while_asking == {
        "status": "sending",
        "attempts": 1,
        "leased": True,
        "events": [("sending", "worker")],
    }
    assert create.call_count == 1
    sent = form(create.calls.last.request)
    validity = int(sent.pop("ValidityPeriod"))
    assert sent == {
        "To": TO,
        "Body": "Your booking is confirmed",
        "From": "+15005550006",
        "StatusCallback": settings.public_base + "/api/sms/webhook",
    }
    assert 590 <= validity <= 600  # what is left of the message's validity
    assert create.calls.last.request.headers["authorization"] == (
        httpx.BasicAuth(settings.twilio.username, settings.twilio.password)._auth_header
    )
    message = await load(sessionmaker, message_id)
    assert (message.twilio_sid, message.twilio_status, message.status) == (sid, "queued", "sending")
    assert message.sender == "+15005550006"
    assert message.lease_until is None
    assert message.attempts == 1
    assert message.error_code is None


async def test_a_message_twilio_took_is_not_claimed_again(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    message_id = await add_message(sessionmaker, cipher)
    create = api.post("/Messages.json").mock(return_value=created(new_sid()))
    assert (await outbox.send(message_id)).outcome is Outcome.ACCEPTED

    again = await outbox.send(message_id)

    assert again.outcome is Outcome.NOT_CLAIMED
    assert create.call_count == 1
    assert (await load(sessionmaker, message_id)).attempts == 1


async def test_a_message_held_by_a_live_worker_is_not_claimed(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    message_id = await add_message(
        sessionmaker, cipher, status="sending", attempts=1, lease_until=now() + timedelta(minutes=1)
    )

    assert (await outbox.send(message_id)).outcome is Outcome.NOT_CLAIMED
    assert not api.calls


async def test_two_workers_sending_at_once_make_one_request_per_message(
    settings: Settings, engine: AsyncEngine, cipher: PhoneCipher, twilio: TwilioClient
) -> None:
    """On separate connections, committed for real: the claim is the only guard."""
    live = create_sessionmaker(engine)
    ids = [await add_message(live, cipher, body=f"race {n}") for n in range(4)]
    try:
        with respx.mock(base_url=twilio_base(settings)) as api:

            async def slow_twilio(request: httpx.Request) -> httpx.Response:
                await asyncio.sleep(0.05)
                return created(new_sid())

            create = api.post("/Messages.json").mock(side_effect=slow_twilio)
            workers = [Outbox(settings, live, cipher, twilio, random.Random(n)) for n in range(3)]

            results = await asyncio.gather(
                *(worker.send(message_id) for message_id in ids for worker in workers)
            )

        outcomes = [result.outcome for result in results]
        assert outcomes.count(Outcome.ACCEPTED) == len(ids)
        assert outcomes.count(Outcome.NOT_CLAIMED) == len(ids) * 2
        assert create.call_count == len(ids)
        assert sorted(form(call.request)["Body"] for call in create.calls) == sorted(
            f"race {n}" for n in range(4)
        )
        for message_id in ids:
            message = await load(live, message_id)
            assert message.attempts == 1
            assert message.twilio_sid is not None
    finally:
        async with engine.begin() as connection:
            await connection.execute(delete(Message).where(Message.id.in_(ids)))


# --- never processed: retry with backoff ----------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "code", "base"),
    [
        pytest.param(lambda: twilio_error(429, 20429), 20429, None, id="429"),
        pytest.param(lambda: twilio_error(400, 21611), 21611, QUEUE_FULL_BASE_SECONDS, id="21611"),
        pytest.param(lambda: httpx.ConnectError("refused"), None, None, id="refused"),
    ],
)
async def test_what_twilio_never_processed_is_retried_later(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    settings: Settings,
    answer: Answer,
    code: int | None,
    base: float | None,
) -> None:
    base = base or settings.send_retry_base_seconds
    message_id = await add_message(sessionmaker, cipher)
    create = api.post("/Messages.json").mock(side_effect=[answer()])

    before = now()
    attempt = await outbox.send(message_id)
    after = now()

    assert attempt.outcome is Outcome.RETRY
    assert attempt.retry_at is not None
    assert (
        before + timedelta(seconds=base / 2) <= attempt.retry_at <= after + timedelta(seconds=base)
    )
    assert create.call_count == 1
    message = await load(sessionmaker, message_id)
    assert message.next_attempt_at == attempt.retry_at
    assert message.next_attempt_at > now()
    assert message.lease_until is None
    assert message.twilio_sid is None
    assert message.needs_reconciliation is False
    assert message.error_code == code
    assert message.status == "sending"
    assert message.final_at is None
    # Not yet due: nobody claims it before its time.
    assert (await outbox.send(message_id)).outcome is Outcome.NOT_CLAIMED
    assert create.call_count == 1


@pytest.mark.parametrize(("base", "cap", "attempts"), [(None, None, 6), (0.5, 2.0, 6)])
async def test_backoff_doubles_with_each_attempt_within_its_jitter(
    api: respx.MockRouter,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    twilio: TwilioClient,
    base: float | None,
    cap: float | None,
    attempts: int,
) -> None:
    """With the default SEND_RETRY_* settings, and with others (they are honoured)."""
    if base is not None:
        settings = settings.model_copy(
            update={"send_retry_base_seconds": base, "send_retry_cap_seconds": cap}
        )
    base, cap = settings.send_retry_base_seconds, settings.send_retry_cap_seconds
    outbox = Outbox(settings, sessionmaker, cipher, twilio, random.Random(99))
    api.post("/Messages.json").mock(return_value=twilio_error(429, 20429))
    message_id = await add_message(sessionmaker, cipher)
    delays: list[float] = []

    for attempt_number in range(1, attempts + 1):
        before = now()
        attempt = await outbox.send(message_id)
        after = now()

        assert attempt.outcome is Outcome.RETRY
        assert attempt.retry_at is not None
        ceiling = min(cap, base * 2 ** (attempt_number - 1))
        assert attempt.retry_at >= before + timedelta(seconds=ceiling / 2)
        assert attempt.retry_at <= after + timedelta(seconds=ceiling)
        delays.append((attempt.retry_at - before).total_seconds())
        assert (await load(sessionmaker, message_id)).attempts == attempt_number
        await make_due(sessionmaker, message_id)

    assert delays[0] <= base
    if cap >= base * 2**attempts:
        assert delays == sorted(delays)
        assert delays[-1] > 16 * delays[0]
    else:
        assert max(delays) <= cap + 0.5  # capped


async def test_retries_of_different_messages_do_not_bunch(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    api.post("/Messages.json").mock(return_value=twilio_error(429, 20429))
    base = outbox.settings.send_retry_base_seconds
    delays = []
    for n in range(8):
        message_id = await add_message(sessionmaker, cipher, body=f"m{n}")
        before = now()
        attempt = await outbox.send(message_id)
        after = now()
        assert attempt.retry_at is not None
        # Drawn from [base / 2, base] at a moment between `before` and `after`.
        assert attempt.retry_at - before >= timedelta(seconds=base / 2)
        assert attempt.retry_at - after <= timedelta(seconds=base)
        delays.append((attempt.retry_at - before).total_seconds())

    assert max(delays) - min(delays) > base / 10  # jitter spreads them over [base / 2, base]


async def test_a_retry_after_429_that_succeeds_makes_exactly_two_requests(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    sid = new_sid()
    create = api.post("/Messages.json").mock(
        side_effect=[twilio_error(429, 20429), created(sid, status="queued")]
    )
    message_id = await add_message(sessionmaker, cipher)

    assert (await outbox.send(message_id)).outcome is Outcome.RETRY
    await make_due(sessionmaker, message_id)
    assert (await outbox.send(message_id)).outcome is Outcome.ACCEPTED
    await make_due(sessionmaker, message_id)
    assert (await outbox.send(message_id)).outcome is Outcome.NOT_CLAIMED

    assert create.call_count == 2
    assert not [call for call in api.calls if call.request.method == "GET"]  # nothing to look for
    message = await load(sessionmaker, message_id)
    assert (message.twilio_sid, message.status, message.attempts) == (sid, "sending", 2)
    assert message.error_code is None
    assert message.error_message is None
    assert [status for status, _ in await events(sessionmaker, message_id)].count("sending") >= 1


async def test_retrying_stops_at_the_message_validity(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    api.post("/Messages.json").mock(return_value=twilio_error(400, 21611))
    message_id = await add_message(sessionmaker, cipher, expires_at=now() + timedelta(seconds=20))

    attempt = await outbox.send(message_id)  # the next try (30 s or more away) is too late

    assert attempt.outcome is Outcome.FAILED
    message = await load(sessionmaker, message_id)
    assert message.status == "failed"
    assert message.error_code == 21611
    assert message.final_at is not None


# --- maybe processed: reconcile before any resend --------------------------------------------


AMBIGUOUS = [
    pytest.param(lambda: twilio_error(500, 20500, "Internal Server Error"), id="500"),
    pytest.param(lambda: twilio_error(503, 20503, "Service Unavailable"), id="503"),
    pytest.param(lambda: httpx.ReadTimeout("no answer"), id="read-timeout"),
]


async def _ambiguous_first_attempt(
    outbox: Outbox,
    sessionmaker: async_sessionmaker[AsyncSession],
    message_id: uuid.UUID,
) -> None:
    before = now()
    attempt = await outbox.send(message_id)
    assert attempt.outcome is Outcome.RETRY
    assert attempt.retry_at is not None
    assert attempt.retry_at - before <= timedelta(seconds=5)  # the first look comes soon
    message = await load(sessionmaker, message_id)
    assert message.needs_reconciliation is True
    assert message.twilio_sid is None
    assert message.lease_until is None
    await make_due(sessionmaker, message_id)


@pytest.mark.parametrize("failure", AMBIGUOUS)
async def test_after_an_ambiguous_create_the_message_found_at_twilio_is_adopted(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    failure: Answer,
) -> None:
    message_id = await add_message(sessionmaker, cipher, body="Your code is ready")
    create = api.post("/Messages.json").mock(side_effect=[failure()])
    sid = new_sid()
    listing = api.get("/Messages.json").mock(
        return_value=page(
            resource(new_sid(), body="Something else entirely", status="delivered"),
            resource(sid, body="Your code is ready", status="sent"),
        )
    )

    await _ambiguous_first_attempt(outbox, sessionmaker, message_id)
    attempt = await outbox.send(message_id)

    assert attempt.outcome is Outcome.ADOPTED
    assert create.call_count == 1  # never sent twice
    assert listing.call_count == 1
    assert listing.calls.last.request.url.params["To"] == TO
    message = await load(sessionmaker, message_id)
    assert (message.twilio_sid, message.twilio_status, message.status) == (sid, "sent", "sent")
    assert message.needs_reconciliation is False
    assert message.lease_until is None
    assert (await outbox.send(message_id)).outcome is Outcome.NOT_CLAIMED


@pytest.mark.parametrize("failure", AMBIGUOUS)
async def test_after_an_ambiguous_create_it_is_sent_again_only_when_twilio_has_no_match(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    failure: Answer,
) -> None:
    message_id = await add_message(sessionmaker, cipher, body="Your table is ready")
    sid = new_sid()
    create = api.post("/Messages.json").mock(side_effect=[failure(), created(sid)])
    listing = api.get("/Messages.json").mock(
        return_value=page(resource(new_sid(), body="Your table is ready, Bob"))
    )

    await _ambiguous_first_attempt(outbox, sessionmaker, message_id)
    attempt = await outbox.send(message_id)

    assert attempt.outcome is Outcome.ACCEPTED
    assert [call.request.method for call in api.calls] == ["POST", "GET", "POST"]
    assert create.call_count == 2
    assert listing.call_count == 1
    assert (await load(sessionmaker, message_id)).twilio_sid == sid


async def test_a_sid_another_message_owns_is_not_adopted(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    # The same text to the same number a minute earlier: Twilio lists it, but it is not ours.
    earlier_sid = new_sid()
    earlier = await add_message(
        sessionmaker, cipher, body="Reminder", status="sent", twilio_sid=earlier_sid
    )
    message_id = await add_message(sessionmaker, cipher, body="Reminder")
    sid = new_sid()
    create = api.post("/Messages.json").mock(
        side_effect=[httpx.ReadTimeout("no answer"), created(sid, body="Reminder")]
    )
    api.get("/Messages.json").mock(return_value=page(resource(earlier_sid, body="Reminder")))

    await _ambiguous_first_attempt(outbox, sessionmaker, message_id)
    attempt = await outbox.send(message_id)

    assert attempt.outcome is Outcome.ACCEPTED
    assert create.call_count == 2
    assert (await load(sessionmaker, message_id)).twilio_sid == sid
    assert (await load(sessionmaker, earlier)).twilio_sid == earlier_sid


async def test_a_failed_look_at_twilio_is_retried_without_sending(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    message_id = await add_message(sessionmaker, cipher)
    create = api.post("/Messages.json").mock(side_effect=[httpx.ReadTimeout("no answer")])
    api.get("/Messages.json").mock(return_value=twilio_error(503, 20503))

    await _ambiguous_first_attempt(outbox, sessionmaker, message_id)
    attempt = await outbox.send(message_id)

    assert attempt.outcome is Outcome.RETRY
    assert create.call_count == 1
    message = await load(sessionmaker, message_id)
    assert message.needs_reconciliation is True
    assert message.twilio_sid is None


@pytest.mark.parametrize(
    ("twilio_status", "error_code", "status"),
    [("delivered", None, "delivered"), ("undelivered", 30003, "undelivered")],
)
async def test_an_adopted_message_twilio_already_finished_is_final(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    twilio_status: str,
    error_code: int | None,
    status: str,
) -> None:
    """Found only after Twilio finished with it: final, with its error, so that its price is
    fetched and nobody polls it again."""
    message_id = await add_message(sessionmaker, cipher, body="late")
    api.post("/Messages.json").mock(side_effect=[httpx.ReadTimeout("no answer")])
    sid = new_sid()
    api.get("/Messages.json").mock(
        return_value=page(resource(sid, body="late", status=twilio_status, error_code=error_code))
    )

    await _ambiguous_first_attempt(outbox, sessionmaker, message_id)
    assert (await outbox.send(message_id)).outcome is Outcome.ADOPTED

    message = await load(sessionmaker, message_id)
    assert (message.status, message.twilio_sid) == (status, sid)
    assert message.final_at is not None
    assert message.error_code == error_code
    if error_code is not None:
        assert message.error_message == "unreachable handset"


# --- worker died mid-attempt ----------------------------------------------------------------


async def test_a_lease_that_ran_out_is_reconciled_and_adopted_without_resending(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    message_id = await add_message(
        sessionmaker,
        cipher,
        body="orphan",
        status="sending",
        attempts=1,
        lease_until=now() - timedelta(minutes=1),
    )
    create = api.post("/Messages.json").mock(return_value=created(new_sid()))
    sid = new_sid()
    api.get("/Messages.json").mock(return_value=page(resource(sid, body="orphan")))

    attempt = await outbox.send(message_id)

    assert attempt.outcome is Outcome.ADOPTED
    assert create.call_count == 0
    message = await load(sessionmaker, message_id)
    assert (message.twilio_sid, message.attempts) == (sid, 2)


async def test_a_lease_that_ran_out_is_resent_only_after_looking(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    message_id = await add_message(
        sessionmaker,
        cipher,
        body="orphan",
        status="sending",
        attempts=1,
        lease_until=now() - timedelta(minutes=1),
    )
    sid = new_sid()
    api.post("/Messages.json").mock(return_value=created(sid, body="orphan"))
    api.get("/Messages.json").mock(return_value=page())

    attempt = await outbox.send(message_id)

    assert attempt.outcome is Outcome.ACCEPTED
    assert [call.request.method for call in api.calls] == ["GET", "POST"]
    assert (await load(sessionmaker, message_id)).twilio_sid == sid


@pytest.mark.parametrize("at_twilio", [True, False])
async def test_a_stop_after_a_lost_attempt_is_looked_up_before_suppressing(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    at_twilio: bool,
) -> None:
    """The worker died mid-attempt, then the number said STOP: if Twilio took the message it
    was sent (and its callbacks must find it); only otherwise is it suppressed."""
    message_id = await add_message(
        sessionmaker,
        cipher,
        body="orphan",
        status="sending",
        attempts=1,
        lease_until=now() - timedelta(minutes=1),
    )
    async with transaction(sessionmaker) as session:
        await optouts.opt_out(session, cipher.blind_index(TO), source="inbound_sms", keyword="STOP")
    sid = new_sid()
    create = api.post("/Messages.json").mock(return_value=created(new_sid()))
    listing = api.get("/Messages.json").mock(
        return_value=page(resource(sid, body="orphan", status="sent")) if at_twilio else page()
    )

    attempt = await outbox.send(message_id)

    assert listing.call_count == 1
    assert create.call_count == 0
    message = await load(sessionmaker, message_id)
    if at_twilio:
        assert attempt.outcome is Outcome.ADOPTED
        assert (message.status, message.twilio_sid) == ("sent", sid)
    else:
        assert attempt.outcome is Outcome.SUPPRESSED
        assert (message.status, message.suppression_reason) == ("suppressed", "opted_out")


async def test_an_expired_message_that_may_be_at_twilio_is_looked_for_not_failed(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    message_id = await add_message(
        sessionmaker,
        cipher,
        body="orphan",
        status="sending",
        attempts=1,
        lease_until=now() - timedelta(minutes=1),
        expires_at=now() - timedelta(minutes=1),
    )
    sid = new_sid()
    api.get("/Messages.json").mock(return_value=page(resource(sid, body="orphan")))

    assert (await outbox.send(message_id)).outcome is Outcome.ADOPTED
    assert (await load(sessionmaker, message_id)).twilio_sid == sid


# --- refused for good ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "meaning"),
    [
        (21211, "invalid To number"),
        (21614, "To is not a mobile number"),
        (21617, "body over 1600 characters"),
    ],
)
async def test_a_permanent_error_fails_the_message_at_once(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    code: int,
    meaning: str,
) -> None:
    message_id = await add_message(sessionmaker, cipher)
    create = api.post("/Messages.json").mock(return_value=twilio_error(400, code, "refused"))

    attempt = await outbox.send(message_id)

    assert attempt.outcome is Outcome.FAILED
    message = await load(sessionmaker, message_id)
    assert (message.status, message.error_code, message.error_message) == ("failed", code, meaning)
    assert message.final_at is not None
    assert message.lease_until is None
    last = (await event_rows(sessionmaker, message_id))[-1]
    assert (last.status, last.source, last.error_code) == ("failed", "worker", code)
    await make_due(sessionmaker, message_id)
    assert (await outbox.send(message_id)).outcome is Outcome.NOT_CLAIMED
    assert create.call_count == 1
    assert not await is_suppressed(sessionmaker, cipher, TO)


async def test_21610_fails_the_message_and_records_the_opt_out(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    message_id = await add_message(sessionmaker, cipher)
    create = api.post("/Messages.json").mock(return_value=twilio_error(400, 21610, "unsubscribed"))

    assert (await outbox.send(message_id)).outcome is Outcome.FAILED

    message = await load(sessionmaker, message_id)
    assert (message.status, message.error_code) == ("failed", 21610)
    assert message.error_message == "recipient replied STOP (unsubscribed)"
    assert await is_suppressed(sessionmaker, cipher, TO)
    assert [(c.kind, c.source) for c in await consents(sessionmaker, cipher, TO)] == [
        ("opt_out", "twilio_21610")
    ]
    assert not await is_suppressed(sessionmaker, cipher, OTHER)
    # The next message to that number never reaches Twilio.
    next_id = await add_message(sessionmaker, cipher)
    assert (await outbox.send(next_id)).outcome is Outcome.SUPPRESSED
    assert create.call_count == 1


async def test_a_message_past_its_validity_fails_without_a_request(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    message_id = await add_message(sessionmaker, cipher, expires_at=now() - timedelta(seconds=1))

    assert (await outbox.send(message_id)).outcome is Outcome.FAILED

    assert not api.calls
    message = await load(sessionmaker, message_id)
    assert message.status == "failed"
    assert message.error_message is not None
    assert "expired" in message.error_message
    assert message.final_at is not None
    assert (await events(sessionmaker, message_id))[-1] == ("failed", "worker")


# --- checked again at send time ------------------------------------------------------------


async def test_a_stop_after_queueing_suppresses_the_message_without_a_request(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    message_id = await add_message(sessionmaker, cipher)
    other_id = await add_message(sessionmaker, cipher, to=OTHER)
    async with transaction(sessionmaker) as session:
        await optouts.opt_out(session, cipher.blind_index(TO), source="inbound_sms", keyword="STOP")
    create = api.post("/Messages.json").mock(return_value=created(new_sid(), to=OTHER))

    assert (await outbox.send(message_id)).outcome is Outcome.SUPPRESSED
    assert (await outbox.send(other_id)).outcome is Outcome.ACCEPTED

    assert [form(call.request)["To"] for call in create.calls] == [OTHER]
    message = await load(sessionmaker, message_id)
    assert (message.status, message.suppression_reason) == ("suppressed", "opted_out")
    assert message.twilio_sid is None
    assert message.final_at is not None
    assert message.lease_until is None
    assert (await events(sessionmaker, message_id))[-1] == ("suppressed", "worker")


async def test_a_preference_turned_off_after_queueing_suppresses_the_message(
    client: httpx.AsyncClient,
    make_api_key: Any,
    redis_client: redis.asyncio.Redis,
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    users = await make_api_key(Scope.USERS_WRITE)
    sender = await make_api_key(Scope.SMS_SEND)
    response = await client.put(
        "/api/users/outbox-alice", json={"phone_number": TO, "phone_verified": True}, headers=users
    )
    assert response.status_code == 201
    sent = await client.post(
        "/api/sms/send",
        json={
            "user_id": "outbox-alice",
            "body": "Booking confirmed",
            "category": "booking_confirmation",
        },
        headers=sender,
    )
    assert sent.status_code == 202
    assert sent.json()["status"] == "queued"
    message_id = uuid.UUID(sent.json()["id"])
    response = await client.put(
        "/api/users/outbox-alice/preferences", json={"booking_confirmations": False}, headers=users
    )
    assert response.status_code == 200
    await make_due(sessionmaker, message_id)

    assert (await outbox.send(message_id)).outcome is Outcome.SUPPRESSED

    assert not api.calls
    message = await load(sessionmaker, message_id)
    assert (message.status, message.suppression_reason) == ("suppressed", "preference_off")


# --- the arq jobs --------------------------------------------------------------------------


async def test_the_send_job_asks_arq_to_retry_when_the_outbox_says_retry(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    message_id = await add_message(sessionmaker, cipher)
    api.post("/Messages.json").mock(side_effect=[twilio_error(429, 20429), created(new_sid())])
    ctx: dict[str, Any] = {"sends": SendCoalescer.build(outbox, in_flight=10)}

    with pytest.raises(Retry) as retry:
        await tasks.send_message(ctx, str(message_id))
    assert retry.value.defer_score is not None
    base_ms = outbox.settings.send_retry_base_seconds * 1000
    assert base_ms / 2 - 100 <= retry.value.defer_score <= base_ms + 100  # the first backoff

    await make_due(sessionmaker, message_id)
    assert await tasks.send_message(ctx, str(message_id)) == "accepted"
    assert await tasks.send_message(ctx, str(message_id)) == "not_claimed"


@pytest.fixture
async def arq_redis(
    settings: Settings, redis_client: redis.asyncio.Redis
) -> AsyncIterator[ArqRedis]:
    pool = await create_redis(settings)
    yield pool
    await pool.aclose()


async def _queued_job_ids(arq_redis: ArqRedis, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    found = set()
    for message_id in ids:
        if await arq_redis.exists(f"arq:job:{message_id}"):
            info = await Job(str(message_id), arq_redis).info()
            assert info is not None
            assert (info.function, info.args) == ("send_message", (str(message_id),))
            found.add(message_id)
    return found


async def test_a_scheduled_messages_own_deferred_job_releases_and_sends_it(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    past, future = now() - timedelta(minutes=1), now() + timedelta(hours=1)
    due = await add_message(sessionmaker, cipher, status="scheduled", send_at=past)
    early = await add_message(
        sessionmaker, cipher, status="scheduled", send_at=future, next_attempt_at=future
    )
    create = api.post("/Messages.json").mock(side_effect=lambda _: created(new_sid()))

    assert (await outbox.send(due, release=True)).outcome is Outcome.ACCEPTED
    assert (await outbox.send(early, release=True)).outcome is Outcome.NOT_CLAIMED
    # Without `release` (a job for a queued message), a scheduled one is not touched.
    other = await add_message(sessionmaker, cipher, status="scheduled", send_at=past)
    assert (await outbox.send(other)).outcome is Outcome.NOT_CLAIMED

    assert create.call_count == 1
    history = await events(sessionmaker, due)
    assert history[:2] == [("queued", "worker"), ("sending", "worker")]
    assert (await load(sessionmaker, early)).status == "scheduled"
    assert (await load(sessionmaker, other)).status == "scheduled"


async def test_the_sweep_releases_scheduled_messages_and_queues_everything_due(
    arq_redis: ArqRedis,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    past, future = now() - timedelta(hours=1), now() + timedelta(hours=1)
    queued = await add_message(sessionmaker, cipher, body="queued")
    scheduled_due = await add_message(
        sessionmaker, cipher, body="due", status="scheduled", send_at=past
    )
    scheduled_later = await add_message(
        sessionmaker,
        cipher,
        body="later",
        status="scheduled",
        send_at=future,
        next_attempt_at=future,
    )
    retry_later = await add_message(
        sessionmaker, cipher, body="retry", status="sending", attempts=1, next_attempt_at=future
    )
    held = await add_message(
        sessionmaker, cipher, body="held", status="sending", attempts=1, lease_until=future
    )
    orphan = await add_message(
        sessionmaker, cipher, body="orphan", status="sending", attempts=1, lease_until=past
    )
    at_twilio = await add_message(
        sessionmaker, cipher, body="sent", status="sending", twilio_sid=new_sid()
    )
    everything = [queued, scheduled_due, scheduled_later, retry_later, held, orphan, at_twilio]
    ctx: dict[str, Any] = {"state": {"sessionmaker": sessionmaker, "redis": arq_redis}}

    result = await tasks.sweep(ctx)

    due = {queued, scheduled_due, orphan}
    assert await _queued_job_ids(arq_redis, everything) == due
    assert result["released"] >= 1
    assert result["enqueued"] >= len(due)
    assert (await load(sessionmaker, scheduled_due)).status == "queued"
    assert await events(sessionmaker, scheduled_due) == [("queued", "sweeper")]
    assert (await load(sessionmaker, scheduled_later)).status == "scheduled"
    assert await events(sessionmaker, scheduled_later) == []

    # Sweeping again queues nothing twice: the job id is the message id.
    again = await tasks.sweep(ctx)
    assert again["released"] == 0
    assert await _queued_job_ids(arq_redis, everything) == due

    # Redis loses everything: the next sweep puts every due message back.
    await arq_redis.flushdb()
    await tasks.sweep(ctx)
    assert await _queued_job_ids(arq_redis, everything) == due


async def test_the_sweep_queues_more_due_messages_than_one_batch(
    arq_redis: ArqRedis,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tasks, "SWEEP_BATCH", 2)
    ids = [await add_message(sessionmaker, cipher, body=f"bulk {n}") for n in range(5)]
    ctx: dict[str, Any] = {"state": {"sessionmaker": sessionmaker, "redis": arq_redis}}

    await asyncio.wait_for(tasks.sweep(ctx), timeout=10)

    assert await _queued_job_ids(arq_redis, ids) == set(ids)


# --- looking before resending, and claims that went stale ----------------------------------


async def test_a_message_not_found_yet_is_looked_for_again_before_any_resend(
    settings: Settings,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    twilio: TwilioClient,
) -> None:
    # Twilio's list can lag its create: within the window, a miss is a reason to look again.
    patient = Outbox(
        settings.model_copy(update={"send_reconcile_window_seconds": 30}),
        sessionmaker,
        cipher,
        twilio,
        random.Random(1),
    )
    message_id = await add_message(sessionmaker, cipher, body="Lagging list")
    sid = new_sid()
    create = api.post("/Messages.json").mock(
        side_effect=[twilio_error(503, 20503), created(sid, body="Lagging list")]
    )
    listing = api.get("/Messages.json").mock(return_value=page())

    await _ambiguous_first_attempt(patient, sessionmaker, message_id)
    second = await patient.send(message_id)

    assert second.outcome is Outcome.RETRY
    assert create.call_count == 1
    assert listing.call_count == 1
    message = await load(sessionmaker, message_id)
    assert message.needs_reconciliation is True
    assert message.ambiguous_since is not None

    # Past the window, with still nothing at Twilio, it is sent again.
    await set_columns(sessionmaker, message_id, ambiguous_since=now() - timedelta(minutes=1))
    await make_due(sessionmaker, message_id)
    third = await patient.send(message_id)

    assert third.outcome is Outcome.ACCEPTED
    assert create.call_count == 2
    assert (await load(sessionmaker, message_id)).ambiguous_since is None


async def test_a_look_up_matches_only_our_sender_and_reads_further_pages(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    message_id = await add_message(sessionmaker, cipher, body="Team alert")
    api.post("/Messages.json").mock(side_effect=[twilio_error(500, 20500)])
    ours = new_sid()
    # Page 1: newer traffic to the same busy number, and the same text from another sender.
    impostor = resource(new_sid(), body="Team alert")
    impostor["from"] = "+15557654321"
    first_page = {
        "messages": [resource(new_sid(), body=f"other {n}") for n in range(3)] + [impostor],
        "next_page_uri": f"/2010-04-01/Accounts/{SANDBOX_ACCOUNT_SID}/Messages.json?PageToken=PA2",
    }
    listing = api.get("/Messages.json").mock(
        side_effect=[httpx.Response(200, json=first_page), page(resource(ours, body="Team alert"))]
    )

    await _ambiguous_first_attempt(outbox, sessionmaker, message_id)
    attempt = await outbox.send(message_id)

    assert attempt.outcome is Outcome.ADOPTED
    assert (await load(sessionmaker, message_id)).twilio_sid == ours
    assert listing.call_count == 2
    assert listing.calls[0].request.url.params["From"] == "+15005550006"
    assert listing.calls[1].request.url.params["PageToken"] == "PA2"


async def test_an_outcome_from_a_claim_that_went_stale_changes_nothing(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    # Worker A stalls past its lease while Twilio answers; worker B claims the message meanwhile.
    message_id = await add_message(sessionmaker, cipher, body="Stalled")
    late_sid = new_sid()

    async with transaction(sessionmaker) as session:
        claimed = await outbox_repository.claim(session, message_id, timedelta(seconds=60))
    assert claimed is not None
    await set_columns(sessionmaker, message_id, attempts=claimed.attempts + 1)  # B's claim

    async with transaction(sessionmaker) as session:
        recorded = await outbox_repository.record_accepted(
            session,
            message_id,
            claimed.attempts,
            sid=late_sid,
            twilio_status="queued",
            status=Status.SENDING,
            sender="+15005550006",
        )
        finished = await outbox_repository.finish(
            session, message_id, claimed.attempts, status=Status.FAILED
        )

    assert (recorded, finished) == (False, False)
    message = await load(sessionmaker, message_id)
    assert (message.twilio_sid, message.status) == (None, "sending")


async def test_a_configuration_error_keeps_the_message_for_later(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    # A rotated token or a wrong sender fails every message alike: the queue must survive it.
    message_id = await add_message(sessionmaker, cipher)
    api.post("/Messages.json").mock(return_value=twilio_error(401, 20003, "Authenticate"))

    attempt = await outbox.send(message_id)

    assert attempt.outcome is Outcome.RETRY
    assert attempt.retry_at is not None
    assert attempt.retry_at - now() >= timedelta(seconds=30)
    message = await load(sessionmaker, message_id)
    assert (message.status, message.error_code, message.final_at) == ("sending", 20003, None)


async def test_a_message_whose_user_was_erased_is_not_sent(
    client: httpx.AsyncClient,
    make_api_key: Any,
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    manager = await make_api_key(Scope.USERS_WRITE, Scope.SMS_SEND)
    await client.put(
        "/api/users/leaver",
        json={"phone_number": TO, "phone_verified": True},
        headers=manager,
    )
    queued = await client.post(
        "/api/sms/send", json={"user_id": "leaver", "body": "bye"}, headers=manager
    )
    later = await client.post(
        "/api/sms/send",
        json={
            "user_id": "leaver",
            "body": "later",
            "send_at": (now() + timedelta(days=30)).isoformat(),
        },
        headers=manager,
    )
    create = api.post("/Messages.json").mock(return_value=created(new_sid()))

    assert (await client.delete("/api/users/leaver", headers=manager)).status_code == 204
    attempt = await outbox.send(uuid.UUID(queued.json()["id"]))

    assert attempt.outcome is Outcome.NOT_CLAIMED
    assert create.call_count == 0
    for answer in (queued, later):
        message = await load(sessionmaker, uuid.UUID(answer.json()["id"]))
        assert (message.status, message.to_encrypted, message.to_index) == (
            "cancelled",
            None,
            None,
        )
