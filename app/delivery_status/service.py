"""Applying what Twilio says about a message, from a callback or from the poller."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.delivery_status import repository
from app.delivery_status.metrics import CALLBACK_LAG
from app.delivery_status.repository import Change, Locked, Step
from app.messages.metrics import count_entered
from app.messages.repository import add_events
from app.messages.status import FINAL, FROM_TWILIO, RANK, Status, moves_forward
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
    """`apply_status` for many callbacks at once, in two statements whatever their number:
    lock their messages, then move each to where its reports take it and record every event. A
    message's reports are taken the lower statuses first, so one sent and delivered within a
    batch keeps both events; each changes it only if it moves it forward, as alone it would
    (duplicates and stale ones change nothing). Returns the SIDs no message has yet."""
    # Which SIDs are known is decided here, once: a worker may commit a SID meanwhile, and a
    # report that missed its row must then be tried again, not dropped.
    locked = {
        row.sid: row
        for row in await repository.lock_messages_of(
            session, sorted({report.sid for report in reports})
        )
    }
    changes: dict[uuid.UUID, Change] = {}
    steps: list[tuple[Locked, Status, StatusReport]] = []
    for report, status in sorted(_tracked(reports), key=lambda pair: RANK[pair[1]]):
        row = locked.get(report.sid)
        if row is None:
            continue
        before = changes.get(row.id)
        if not moves_forward(before.status if before else row.status, status):
            continue
        error_code = report.error_code
        error_message = meaning_of(error_code) if error_code is not None else None
        if error_code is None and before is not None:  # a report without one keeps the last
            error_code, error_message = before.error_code, before.error_message
        changes[row.id] = Change(
            row.id, status, report.twilio_status, error_code, error_message, status in FINAL
        )
        steps.append((row, status, report))
    await repository.record_changes(
        session,
        list(changes.values()),
        [
            Step(row.id, status, report.twilio_status, report.error_code)
            for row, status, report in steps
        ],
    )
    for status, categories in _categories_by_status(steps).items():
        count_entered(session, status, categories)
    for row, status, report in steps:
        if row.since_attempt is not None:
            CALLBACK_LAG.labels(status).observe(max(0.0, row.since_attempt.total_seconds()))
        if report.error_code == OPT_OUT_CODE and row.to_index is not None:
            await optouts.opt_out(
                session, row.to_index, source="twilio_21610", message_sid=report.sid
            )
    return {report.sid for report in reports} - locked.keys()


def _tracked(reports: Sequence[StatusReport]) -> Iterator[tuple[StatusReport, Status]]:
    for report in reports:
        status = FROM_TWILIO.get(report.twilio_status)
        if status is not None:  # a status of Twilio's we do not track changes nothing
            yield report, status


def _categories_by_status(
    steps: Sequence[tuple[Locked, Status, StatusReport]],
) -> dict[Status, list[str]]:
    categories: dict[Status, list[str]] = {}
    for row, status, _ in steps:
        categories.setdefault(status, []).append(row.category)
    return categories
