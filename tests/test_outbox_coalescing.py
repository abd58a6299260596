"""Send jobs running at once in a worker go together (app/outbox/coalescing.py): each job gets
its own message's outcome, as Outbox.send would give it. Committed for real, on a pool of
connections, as a worker runs it; Twilio is respx."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import respx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.crypto import PhoneCipher
from app.core.database import create_sessionmaker
from app.core.settings import Settings
from app.outbox.coalescing import AttemptLost, SendCoalescer
from app.outbox.service import Outbox, Outcome
from tests.sending_support import add_message, created, load, new_sid, twilio_base, twilio_error

REQUESTED_BY = "api_key:coalescing-test"


@pytest.fixture
def api(settings: Settings) -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=twilio_base(settings), assert_all_called=False) as router:
        yield router


@pytest.fixture
async def committing(engine: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    yield create_sessionmaker(engine)
    async with engine.begin() as connection:
        await connection.execute(
            text("DELETE FROM messages WHERE requested_by = :by"), {"by": REQUESTED_BY}
        )


@pytest.fixture
def sends(outbox: Outbox, committing: async_sessionmaker[AsyncSession]) -> SendCoalescer:
    return SendCoalescer.build(dataclasses.replace(outbox, sessionmaker=committing), in_flight=50)


def number(n: int) -> str:
    return f"+1415666{n:04d}"


async def add(
    committing: async_sessionmaker[AsyncSession], cipher: PhoneCipher, n: int, **columns: Any
) -> uuid.UUID:
    return await add_message(
        committing, cipher, to=number(n), body=f"hello {n}", requested_by=REQUESTED_BY, **columns
    )


async def test_jobs_arriving_together_share_a_few_transactions_and_each_is_sent_once(
    sends: SendCoalescer,
    api: respx.MockRouter,
    committing: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    create = api.post("/Messages.json").mock(side_effect=lambda _: created(new_sid()))
    ids = [await add(committing, cipher, n) for n in range(40)]

    attempts = await asyncio.gather(*(sends.send(message_id) for message_id in ids))

    assert {attempt.outcome for attempt in attempts} == {Outcome.ACCEPTED}
    sent = sorted(dict(parse_qsl(call.request.content.decode()))["To"] for call in create.calls)
    assert sent == [number(n) for n in range(40)]
    messages = [await load(committing, message_id) for message_id in ids]
    assert len({message.twilio_sid for message in messages if message.twilio_sid}) == 40
    # A claim's last_attempt_at is its transaction's now(): one claim for the 40.
    claims = {message.last_attempt_at for message in messages}
    assert len(claims) == 1, claims


async def test_each_job_gets_its_own_outcome(
    sends: SendCoalescer,
    api: respx.MockRouter,
    committing: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        to = dict(parse_qsl(request.content.decode()))["To"]
        if to == number(1):
            return twilio_error(429, 20429)
        if to == number(2):
            raise RuntimeError("a bug on the way to Twilio")
        return created(new_sid())

    api.post("/Messages.json").mock(side_effect=answer)
    accepted, throttled, broken = [await add(committing, cipher, n) for n in range(3)]
    now = datetime.now(UTC)
    due = await add(committing, cipher, 3, status="scheduled", send_at=now - timedelta(seconds=1))
    later = await add(committing, cipher, 4, status="scheduled", send_at=now + timedelta(hours=1))

    results = await asyncio.gather(
        sends.send(accepted),
        sends.send(throttled),
        sends.send(broken),
        sends.send(due, release=True),
        sends.send(later, release=True),
        return_exceptions=True,
    )

    assert [getattr(result, "outcome", result.__class__) for result in results] == [
        Outcome.ACCEPTED,
        Outcome.RETRY,
        AttemptLost,
        Outcome.ACCEPTED,
        Outcome.NOT_CLAIMED,
    ]
    retry = results[1]
    assert not isinstance(retry, BaseException)
    assert retry.retry_at is not None
    waiting = await load(committing, throttled)
    assert waiting.twilio_sid is None
    assert waiting.next_attempt_at == retry.retry_at
    assert (await load(committing, later)).status == "scheduled"
    assert (await load(committing, due)).twilio_sid is not None
