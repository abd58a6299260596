"""Retention (SPEC §9): message bodies erased after MESSAGE_BODY_RETENTION_DAYS, messages
deleted after MESSAGE_RETENTION_DAYS with their counts kept per day for analytics.

Each batch is a short transaction of its own that locks at most `batch_size` rows and skips
those anybody holds, so sending never waits on it and two runs at once (two workers, the
CLI beside the cron) split the work instead of doing it twice. A run that stops half-way
keeps what it committed; the next one goes on from there."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.database import transaction
from app.core.settings import Settings
from app.retention import repository

logger = logging.getLogger(__name__)

BATCH_SIZE = 5000


@dataclass(frozen=True, slots=True)
class Report:
    """What a run did, or with `dry_run` what it would do."""

    bodies_erased: int
    notification_data_erased: int
    messages_deleted: int
    days_aggregated: int
    notifications_deleted: int
    dry_run: bool = False

    def as_dict(self) -> dict[str, int | bool]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Cutoffs:
    bodies: datetime
    messages: datetime

    @classmethod
    def of(cls, settings: Settings, now: datetime) -> Cutoffs:
        return cls(
            bodies=now - timedelta(days=settings.message_body_retention_days),
            messages=now - timedelta(days=settings.message_retention_days),
        )


async def apply_retention(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
    dry_run: bool = False,
) -> Report:
    """Ages are measured from `now` (Python's clock by default), never the database's."""
    cutoffs = Cutoffs.of(settings, now or datetime.now(UTC))
    if dry_run:
        async with transaction(sessionmaker) as session:
            counts = await repository.pending(
                session, bodies_before=cutoffs.bodies, messages_before=cutoffs.messages
            )
        report = Report(
            bodies_erased=counts.bodies,
            notification_data_erased=counts.notification_data,
            messages_deleted=counts.messages,
            days_aggregated=counts.days,
            notifications_deleted=counts.notifications,
            dry_run=True,
        )
    else:
        report = await _run(sessionmaker, cutoffs, batch_size)
    logger.info(
        "retention%s: %d bodies erased, %d notifications' data erased, %d messages deleted "
        "(counts kept for %d days), %d notifications deleted; bodies before %s, messages "
        "before %s",
        " (dry run, nothing changed)" if dry_run else "",
        report.bodies_erased,
        report.notification_data_erased,
        report.messages_deleted,
        report.days_aggregated,
        report.notifications_deleted,
        cutoffs.bodies.isoformat(timespec="seconds"),
        cutoffs.messages.isoformat(timespec="seconds"),
    )
    return report


async def _run(
    sessionmaker: async_sessionmaker[AsyncSession], cutoffs: Cutoffs, batch_size: int
) -> Report:
    async def batches(step: Callable[[AsyncSession], Awaitable[int]]) -> int:
        total = 0
        while True:
            async with transaction(sessionmaker) as session:
                done = await step(session)
            total += done
            # A short batch: nothing left but rows someone else holds (skipped, not waited on).
            if done < batch_size:
                return total

    days: set[date] = set()

    async def delete_messages(session: AsyncSession) -> int:
        deleted = await repository.delete_messages(
            session, before=cutoffs.messages, limit=batch_size
        )
        days.update(deleted.days)
        return deleted.messages

    # The seven-day erasures first: they are the promise most at risk if a run is cut short.
    bodies = await batches(
        lambda session: repository.erase_bodies(session, before=cutoffs.bodies, limit=batch_size)
    )
    data = await batches(
        lambda session: repository.erase_notification_data(
            session, before=cutoffs.bodies, limit=batch_size
        )
    )
    messages = await batches(delete_messages)
    notifications = await batches(
        lambda session: repository.delete_notifications(
            session, before=cutoffs.messages, limit=batch_size
        )
    )
    return Report(
        bodies_erased=bodies,
        notification_data_erased=data,
        messages_deleted=messages,
        days_aggregated=len(days),
        notifications_deleted=notifications,
    )
