"""The outbox's batched path (app/outbox/batch.py), as a campaign chunk uses it: one statement
claims a batch and one records what Twilio took, and each message ends exactly as the single
path (Outbox.send) leaves it: status, Twilio's fields, events, opt-outs. Twilio is respx;
PostgreSQL is real."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import respx
from sqlalchemy import event, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from app.campaigns.models import Campaign
from app.core.crypto import PhoneCipher
from app.core.database import transaction
from app.core.settings import Settings
from app.messages.models import Message
from app.optouts import service as optouts
from app.outbox.batch import BatchResult, send_batch
from app.outbox.service import Outbox, Outcome
from app.preferences.models import SmsPreferences
from app.users.models import User
from tests.sending_support import (
    add_message,
    created,
    event_rows,
    is_suppressed,
    load,
    new_sid,
    set_columns,
    twilio_base,
    twilio_error,
)

Answer = Callable[[], httpx.Response | Exception]


@pytest.fixture
def api(settings: Settings) -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=twilio_base(settings), assert_all_called=False) as router:
        yield router


def number(n: int) -> str:
    return f"+1415555{n:04d}"


def sent_to(route: respx.Route) -> list[str]:
    return [dict(parse_qsl(call.request.content.decode()))["To"] for call in route.calls]


async def batch(outbox: Outbox, ids: list[uuid.UUID], **options: Any) -> BatchResult:
    # The test's one connection: one create (and its database work) at a time.
    return await send_batch(outbox, ids, gate=asyncio.Semaphore(1), lanes=1, **options)


async def snapshot(
    sessionmaker: async_sessionmaker[AsyncSession], message_id: uuid.UUID
) -> dict[str, Any]:
    """What a user sees of a message and its history (a SID's value aside: each is new)."""
    message = await load(sessionmaker, message_id)
    return {
        "status": message.status,
        "has_sid": message.twilio_sid is not None,
        "twilio_status": message.twilio_status,
        "sender": message.sender,
        "error": (message.error_code, message.error_message),
        "suppression_reason": message.suppression_reason,
        "attempts": message.attempts,
        "leased": message.lease_until is not None,
        "needs_reconciliation": message.needs_reconciliation,
        "ambiguous_since_set": message.ambiguous_since is not None,
        "final": message.final_at is not None,
        "events": [
            (row.status, row.source, row.twilio_status, row.error_code, row.detail)
            for row in await event_rows(sessionmaker, message_id)
        ],
    }


class Statements:
    """UPDATE statements on messages, as the database receives them."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, *args: Any) -> None:
        self.seen.append(" ".join(str(args[2]).split()))

    def updates(self) -> list[str]:
        return [sql for sql in self.seen if sql.startswith("UPDATE messages")]


@pytest.fixture
def statements(connection: AsyncConnection) -> Iterator[Statements]:
    seen = Statements()
    target = connection.sync_connection
    assert target is not None
    event.listen(target, "before_cursor_execute", seen)
    yield seen
    event.remove(target, "before_cursor_execute", seen)


def by_body(answers: dict[str, Answer]) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        result = answers[dict(parse_qsl(request.content.decode()))["Body"]]()
        if isinstance(result, Exception):
            raise result
        return result

    return answer


# --- batching --------------------------------------------------------------------------------


async def test_a_batch_is_claimed_in_one_statement_and_recorded_in_one(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    statements: Statements,
) -> None:
    create = api.post("/Messages.json").mock(side_effect=lambda _: created(new_sid()))
    ids = [await add_message(sessionmaker, cipher, to=number(n), body="Sale") for n in range(20)]
    twin = await add_message(sessionmaker, cipher, to=number(99), body="Sale")
    statements.seen.clear()

    result = await batch(outbox, ids)

    assert {attempt.outcome for attempt in result.attempts.values()} == {Outcome.ACCEPTED}
    assert set(result.attempts) == set(ids)
    assert sorted(sent_to(create)) == [number(n) for n in range(20)]
    updates = statements.updates()
    assert len(updates) == 2, updates  # the claim, then what Twilio took
    assert "attempts=(messages.attempts + $2::INTEGER)" in updates[0]
    assert "twilio_sid=accepted.sid" in updates[1]
    assert len([sql for sql in statements.seen if "INSERT INTO message_events" in sql]) == 2
    # Each exactly as the single path leaves it.
    assert (await outbox.send(twin)).outcome is Outcome.ACCEPTED
    expected = await snapshot(sessionmaker, twin)
    assert expected["events"] == [
        ("sending", "worker", None, None, None),
        ("sending", "worker", "queued", None, None),
    ]
    for message_id in ids:
        assert await snapshot(sessionmaker, message_id) == expected
    sids = {(await load(sessionmaker, message_id)).twilio_sid for message_id in ids}
    assert len(sids) == 20


async def test_mixed_answers_end_each_message_as_the_single_path_does(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    statements: Statements,
) -> None:
    answers: dict[str, Answer] = {
        "accepted": lambda: created(new_sid(), status="accepted"),
        "throttled": lambda: twilio_error(429, 20429, "Too Many Requests"),
        "invalid": lambda: twilio_error(400, 21211, "invalid To number"),
        "unsubscribed": lambda: twilio_error(400, 21610, "unsubscribed"),
        "timeout": lambda: httpx.ReadTimeout("no answer"),
    }
    create = api.post("/Messages.json").mock(side_effect=by_body(answers))
    pairs = {
        body: (
            await add_message(sessionmaker, cipher, to=number(n), body=body),
            await add_message(sessionmaker, cipher, to=number(50 + n), body=body),
        )
        for n, body in enumerate(answers)
    }
    statements.seen.clear()

    result = await batch(outbox, [batched for batched, _ in pairs.values()])

    claim = "attempts=(messages.attempts + $2::INTEGER)"
    assert len([sql for sql in statements.updates() if claim in sql]) == 1
    assert create.call_count == 5
    singles = {body: await outbox.send(single) for body, (_, single) in pairs.items()}
    outcomes = {body: result.attempts[batched].outcome for body, (batched, _) in pairs.items()}
    assert outcomes == {body: attempt.outcome for body, attempt in singles.items()}
    assert outcomes == {
        "accepted": Outcome.ACCEPTED,
        "throttled": Outcome.RETRY,
        "invalid": Outcome.FAILED,
        "unsubscribed": Outcome.FAILED,
        "timeout": Outcome.RETRY,
    }
    for body, (batched, single) in pairs.items():
        assert await snapshot(sessionmaker, batched) == await snapshot(sessionmaker, single), body
    timed_out = await load(sessionmaker, pairs["timeout"][0])
    assert timed_out.needs_reconciliation is True
    assert await is_suppressed(sessionmaker, cipher, number(3))  # 21610's opt-out
    assert await is_suppressed(sessionmaker, cipher, number(53))


# --- the send-time checks --------------------------------------------------------------------


async def add_user(
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    time_zone: str | None = None,
    **switches: bool,
) -> uuid.UUID:
    async with transaction(sessionmaker) as session:
        user = User(external_id=f"batch-{uuid.uuid4().hex[:8]}", time_zone=time_zone)
        session.add(user)
        await session.flush()
        session.add(SmsPreferences(user_id=user.id, **switches))
        await session.flush()
        return user.id


async def test_stop_preferences_and_expiry_are_checked_at_send_time_as_one_by_one(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    create = api.post("/Messages.json").mock(side_effect=lambda _: created(new_sid()))
    marketing_off = await add_user(sessionmaker, cipher, marketing=False)
    all_off = await add_user(sessionmaker, cipher, sms_enabled=False, marketing=True)
    marketing_on = await add_user(sessionmaker, cipher, marketing=True)

    async def messages(offset: int) -> dict[str, uuid.UUID]:
        def at(n: int) -> str:
            return number(offset + n)

        made = {
            "stopped": await add_message(sessionmaker, cipher, to=at(0)),
            "preference_off": await add_message(
                sessionmaker, cipher, to=at(1), user_id=marketing_off, category="marketing"
            ),
            "sms_disabled": await add_message(
                sessionmaker, cipher, to=at(2), user_id=all_off, category="marketing"
            ),
            "expired": await add_message(
                sessionmaker, cipher, to=at(3), expires_at=datetime.now(UTC) - timedelta(1)
            ),
            "goes": await add_message(
                sessionmaker, cipher, to=at(4), user_id=marketing_on, category="security"
            ),
        }
        async with transaction(sessionmaker) as session:
            await optouts.opt_out(session, cipher.blind_index(at(0)), source="test")
        return made

    batched, single = await messages(0), await messages(50)

    result = await batch(outbox, list(batched.values()))

    assert sent_to(create) == [number(4)]
    outcomes = {name: result.attempts[message_id].outcome for name, message_id in batched.items()}
    assert outcomes == {
        "stopped": Outcome.SUPPRESSED,
        "preference_off": Outcome.SUPPRESSED,
        "sms_disabled": Outcome.SUPPRESSED,
        "expired": Outcome.FAILED,
        "goes": Outcome.ACCEPTED,
    }
    for name, message_id in single.items():
        assert (await outbox.send(message_id)).outcome is outcomes[name]
    for name in batched:
        assert await snapshot(sessionmaker, batched[name]) == await snapshot(
            sessionmaker, single[name]
        ), name
    stopped = await load(sessionmaker, batched["stopped"])
    assert (stopped.status, stopped.suppression_reason) == ("suppressed", "opted_out")
    assert (await load(sessionmaker, batched["expired"])).error_message == (
        "expired before Twilio accepted it"
    )


def zone_at_2am() -> str:
    """A fixed-offset IANA zone where it is now about 02:00: deep in the default quiet hours
    (21:00-08:00) without moving the clock the database also reads."""
    offset = (2 - datetime.now(UTC).hour) % 24
    if offset > 14:
        offset -= 24
    return f"Etc/GMT{-offset:+d}"  # POSIX signs: Etc/GMT-5 is UTC+5


async def test_a_marketing_message_claimed_in_its_recipients_night_is_held_as_one_by_one(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    create = api.post("/Messages.json").mock(side_effect=lambda _: created(new_sid()))
    asleep = await add_user(sessionmaker, cipher, time_zone=zone_at_2am(), marketing=True)
    batched, single = [
        await add_message(sessionmaker, cipher, to=number(n), user_id=asleep, category="marketing")
        for n in (0, 1)
    ]

    result = await batch(outbox, [batched])

    assert result.attempts[batched].outcome is Outcome.HELD
    assert (await outbox.send(single)).outcome is Outcome.HELD
    assert not create.called
    held = await snapshot(sessionmaker, batched)
    assert held == await snapshot(sessionmaker, single)
    assert held["status"] == "scheduled"
    assert held["events"][-1][-1] == "held for the recipient's quiet hours"


async def test_with_quiet_hours_off_no_recipients_zone_is_looked_up(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """QUIET_HOURS_START = QUIET_HOURS_END: never quiet. A campaign then pays for no zone
    look-up (a decryption and libphonenumber per message)."""

    def no_look_up(*_: object) -> None:
        raise AssertionError("a zone was looked up with quiet hours off")

    monkeypatch.setattr("app.outbox.batch.recipient_zones", no_look_up)
    never_quiet = {"quiet_hours_start": time(0, 0), "quiet_hours_end": time(0, 0)}
    outbox = dataclasses.replace(outbox, settings=outbox.settings.model_copy(update=never_quiet))
    create = api.post("/Messages.json").mock(side_effect=lambda _: created(new_sid()))
    asleep = await add_user(sessionmaker, cipher, time_zone=zone_at_2am(), marketing=True)
    message_id = await add_message(
        sessionmaker, cipher, to=number(0), user_id=asleep, category="marketing"
    )

    result = await batch(outbox, [message_id])

    assert result.attempts[message_id].outcome is Outcome.ACCEPTED
    assert sent_to(create) == [number(0)]


# --- claims ----------------------------------------------------------------------------------


async def test_a_paused_campaign_has_nothing_claimed(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    create = api.post("/Messages.json").mock(side_effect=lambda _: created(new_sid()))
    async with transaction(sessionmaker) as session:
        campaign = Campaign(
            requested_by="api_key:test", state="paused", messages=2, chunks=1, estimate={}
        )
        session.add(campaign)
        await session.flush()
        campaign_id = campaign.id
    ids = [
        await add_message(sessionmaker, cipher, to=number(n), campaign_id=campaign_id)
        for n in range(2)
    ]

    result = await batch(outbox, ids)

    assert {attempt.outcome for attempt in result.attempts.values()} == {Outcome.NOT_CLAIMED}
    assert create.call_count == 0
    for message_id in ids:
        message = await load(sessionmaker, message_id)
        assert (message.status, message.attempts, message.lease_until) == ("queued", 0, None)


async def test_a_message_another_worker_holds_is_not_sent_again(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    create = api.post("/Messages.json").mock(side_effect=lambda _: created(new_sid()))
    ids = [await add_message(sessionmaker, cipher, to=number(n)) for n in range(3)]
    # Another worker's claim, its lease still running.
    await set_columns(
        sessionmaker,
        ids[1],
        status="sending",
        attempts=1,
        lease_until=datetime.now(UTC) + timedelta(minutes=5),
    )

    result = await batch(outbox, ids)

    assert result.attempts[ids[1]].outcome is Outcome.NOT_CLAIMED
    assert sorted(sent_to(create)) == [number(0), number(2)]
    held = await load(sessionmaker, ids[1])
    assert (held.twilio_sid, held.attempts, held.needs_reconciliation) == (None, 1, False)


async def test_a_message_a_dead_worker_left_goes_through_the_single_path_and_is_reconciled(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    create = api.post("/Messages.json").mock(side_effect=lambda _: created(new_sid()))
    listing = api.get("/Messages.json").mock(
        return_value=httpx.Response(200, json={"messages": [], "next_page_uri": None})
    )
    ids = [await add_message(sessionmaker, cipher, to=number(n)) for n in range(2)]
    await set_columns(  # its lease ran out: the attempt may have reached Twilio
        sessionmaker,
        ids[0],
        status="sending",
        attempts=1,
        last_attempt_at=datetime.now(UTC) - timedelta(hours=2),
        lease_until=datetime.now(UTC) - timedelta(hours=1),
    )

    result = await batch(outbox, ids)

    assert listing.call_count == 1  # looked for at Twilio first
    assert result.attempts[ids[0]].outcome is Outcome.ACCEPTED
    assert result.attempts[ids[1]].outcome is Outcome.ACCEPTED
    assert sorted(sent_to(create)) == [number(0), number(1)]


async def test_an_answer_after_the_claim_was_lost_is_not_recorded(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    ids = [await add_message(sessionmaker, cipher, to=number(n)) for n in range(2)]

    async def another_worker_claims_the_first(request: httpx.Request) -> httpx.Response:
        if dict(parse_qsl(request.content.decode()))["To"] == number(0):
            async with transaction(sessionmaker) as session:
                await session.execute(
                    update(Message)
                    .where(Message.id == ids[0])
                    .values(attempts=Message.attempts + 1)
                )
        return created(new_sid())

    api.post("/Messages.json").mock(side_effect=another_worker_claims_the_first)

    await batch(outbox, ids)

    lost = await load(sessionmaker, ids[0])
    assert (lost.twilio_sid, lost.attempts, lost.status) == (None, 2, "sending")
    assert [row.status for row in await event_rows(sessionmaker, ids[0])] == ["sending"]
    kept = await load(sessionmaker, ids[1])
    assert kept.twilio_sid is not None


async def test_claims_not_used_when_told_to_stop_are_given_back(
    outbox: Outbox,
    api: respx.MockRouter,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    create = api.post("/Messages.json").mock(side_effect=lambda _: created(new_sid()))
    ids = [await add_message(sessionmaker, cipher, to=number(n)) for n in range(3)]
    asked = 0

    async def once() -> bool:
        nonlocal asked
        asked += 1
        return asked == 1

    result = await batch(outbox, ids, proceed=once)

    assert create.call_count == 1
    assert len(result.given_back) == 2
    assert set(result.attempts) == set(ids) - set(result.given_back)
    for message_id in result.given_back:
        message = await load(sessionmaker, message_id)
        assert (message.status, message.attempts, message.lease_until) == ("queued", 0, None)
        assert [(row.status, row.detail) for row in await event_rows(sessionmaker, message_id)] == [
            ("sending", None),
            ("queued", "not sent: its campaign stopped"),
        ]
    # Free again: the next batch sends them.
    again = await batch(outbox, list(result.given_back))
    assert {attempt.outcome for attempt in again.attempts.values()} == {Outcome.ACCEPTED}
    assert create.call_count == 3
