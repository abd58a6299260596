"""The backstop poller and the price fetcher: asking Twilio what callbacks did not say."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from app.core.database import transaction
from app.core.state import State
from app.delivery_status import repository
from app.delivery_status.service import apply_status
from app.twilio.errors import TwilioError
from app.twilio.schemas import TwilioMessage

logger = logging.getLogger(__name__)

BATCH = 200
# Calls in flight at once: leave Twilio's concurrency to the senders.
_CONCURRENCY = 10
PRICE_AFTER = timedelta(seconds=30)


async def _fetch_all(
    state: State, rows: list[tuple[uuid.UUID, str]]
) -> list[tuple[uuid.UUID, TwilioMessage]]:
    gate = asyncio.Semaphore(_CONCURRENCY)

    async def fetch(message_id: uuid.UUID, sid: str) -> tuple[uuid.UUID, TwilioMessage] | None:
        async with gate:
            try:
                return message_id, await state["twilio"].fetch_message(sid)
            except TwilioError as error:
                logger.warning("could not fetch %s from Twilio: %s", sid, error)
                return None

    results = await asyncio.gather(*(fetch(message_id, sid) for message_id, sid in rows))
    return [result for result in results if result is not None]


async def poll_statuses(ctx: dict[str, Any]) -> int:
    """Messages without a final status for a while: fetched, their status applied."""
    state: State = ctx["state"]
    quiet_for = timedelta(seconds=state["settings"].status_poll_after_seconds)
    async with transaction(state["sessionmaker"]) as session:
        rows = await repository.awaiting_status(session, quiet_for=quiet_for, limit=BATCH)
    moved = 0
    results = await _fetch_all(state, rows)
    for message_id, fetched in results:
        async with transaction(state["sessionmaker"]) as session:
            if await apply_status(
                session, fetched.sid, fetched.status, fetched.error_code, source="poller"
            ):
                moved += 1
            else:
                await repository.touch(session, message_id)
    await _touch_unanswered(state, rows, results)
    return moved


async def fetch_prices(ctx: dict[str, Any]) -> int:
    """Price and segments as Twilio billed them, fetched once the message is final."""
    state: State = ctx["state"]
    async with transaction(state["sessionmaker"]) as session:
        rows = await repository.awaiting_price(session, settled_for=PRICE_AFTER, limit=BATCH)
    priced = 0
    results = await _fetch_all(state, rows)
    await _touch_unanswered(state, rows, results)
    for message_id, fetched in results:
        price = _decimal(fetched.price)
        async with transaction(state["sessionmaker"]) as session:
            await repository.record_price(
                session,
                message_id,
                price=price,
                price_unit=fetched.price_unit,
                segments=fetched.num_segments,
                settled=price is not None,
            )
        priced += price is not None
    return priced


async def _touch_unanswered(
    state: State,
    rows: list[tuple[uuid.UUID, str]],
    results: list[tuple[uuid.UUID, TwilioMessage]],
) -> None:
    """Messages Twilio did not answer for go to the back of the line: the oldest first, a
    batch of messages that always fail would otherwise be all the poller ever asks about."""
    answered = {message_id for message_id, _ in results}
    unanswered = [message_id for message_id, _ in rows if message_id not in answered]
    if unanswered:
        async with transaction(state["sessionmaker"]) as session:
            for message_id in unanswered:
                await repository.touch(session, message_id)


def _decimal(value: str | None) -> Decimal | None:
    try:
        return Decimal(value) if value else None
    except InvalidOperation:
        return None
