"""Applying what Twilio says about a message, from a callback or from the poller."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from app.delivery_status import repository
from app.messages.repository import add_events
from app.messages.status import FROM_TWILIO
from app.optouts import service as optouts
from app.twilio.errors import OPT_OUT_CODE, meaning_of

logger = logging.getLogger(__name__)


async def apply_status(
    session: AsyncSession,
    sid: str,
    twilio_status: str,
    error_code: int | None,
    *,
    source: str,
) -> bool:
    """True when the message moved forward; unknown SIDs and stale news change nothing."""
    status = FROM_TWILIO.get(twilio_status)
    if status is None:
        return False
    advanced = await repository.advance(
        session,
        sid,
        status,
        twilio_status=twilio_status,
        error_code=error_code,
        error_message=meaning_of(error_code) if error_code is not None else None,
    )
    if advanced is None:
        return False
    await add_events(
        session,
        [advanced.message_id],
        status,
        source=source,
        twilio_status=twilio_status,
        error_code=error_code,
    )
    if error_code == OPT_OUT_CODE and advanced.to_index is not None:
        await optouts.opt_out(session, advanced.to_index, source="twilio_21610", message_sid=sid)
    return True
