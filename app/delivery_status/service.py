"""Applying what Twilio says about a message, from a callback or from the poller."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.delivery_status import repository
from app.delivery_status.metrics import CALLBACK_LAG
from app.delivery_status.repository import Reported
from app.messages.metrics import count_entered
from app.messages.repository import NewEvent, add_event_rows, add_events
from app.messages.status import FROM_TWILIO, RANK, Status
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
    count_entered(session, status, [advanced.category])
    if source == "callback" and advanced.since_attempt is not None:
        CALLBACK_LAG.labels(status).observe(max(0.0, advanced.since_attempt.total_seconds()))
    if error_code == OPT_OUT_CODE and advanced.to_index is not None:
        await optouts.opt_out(session, advanced.to_index, source="twilio_21610", message_sid=sid)
    return True


@dataclass(frozen=True, slots=True)
class StatusReport:
    """What one status callback says."""

    sid: str
    twilio_status: str
    error_code: int | None


async def apply_reports(session: AsyncSession, reports: Sequence[StatusReport]) -> set[str]:
    """`apply_status` for many callbacks at once, in a few statements: one update per status
    reported (the lower statuses first, so a message sent and delivered within one batch keeps
    both events), one insert of every event. Returns the SIDs no message has yet."""
    groups: dict[Status, dict[str, StatusReport]] = {}
    for report in reports:
        status = FROM_TWILIO.get(report.twilio_status)
        if status is not None:  # a status of Twilio's we do not track changes nothing
            groups.setdefault(status, {}).setdefault(report.sid, report)  # duplicates: once
    events: list[NewEvent] = []
    # Which SIDs are known is decided here, once: a worker may commit a SID between two later
    # statements, and a report that missed its row must then be tried again, not dropped.
    known = await repository.lock_messages_of(session, sorted({report.sid for report in reports}))
    for status in sorted(groups, key=RANK.__getitem__):
        advanced = await repository.advance_many(
            session,
            status,
            [
                Reported(
                    report.sid,
                    report.twilio_status,
                    report.error_code,
                    meaning_of(report.error_code) if report.error_code is not None else None,
                )
                for report in groups[status].values()
                if report.sid in known
            ],
        )
        count_entered(session, status, [row.advanced.category for row in advanced])
        for row in advanced:
            events.append(
                NewEvent(
                    row.advanced.message_id,
                    status,
                    "callback",
                    twilio_status=groups[status][row.sid].twilio_status,
                    error_code=row.error_code,
                )
            )
            if row.advanced.since_attempt is not None:
                lag = max(0.0, row.advanced.since_attempt.total_seconds())
                CALLBACK_LAG.labels(status).observe(lag)
            if row.error_code == OPT_OUT_CODE and row.advanced.to_index is not None:
                await optouts.opt_out(
                    session, row.advanced.to_index, source="twilio_21610", message_sid=row.sid
                )
    await add_event_rows(session, events)
    return {report.sid for report in reports} - known
