"""Status callbacks applied together: group commit.

Each callback waits until its report is committed, so Twilio's 2xx still means "recorded"; but
the callbacks arriving while one transaction runs are applied together in the next, a few
statements for the lot (service.apply_reports). Alone, a callback is applied at once; under
load, one transaction serves hundreds, where a transaction each left the API at ~150
callbacks/s with the database's round trips and the ORM's work per callback."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.database import transaction
from app.delivery_status.service import StatusReport, apply_reports

logger = logging.getLogger(__name__)

# Reports in one transaction at most: its locks and its statements stay short.
MAX_BATCH = 500
# A callback can beat the worker's commit of the SID it reports (Twilio calls back moments after
# answering the create, and the worker records what Twilio took a batch at a time): it is tried
# again after these pauses before it is given up (the poller remains the backstop).
LATE_SID_PAUSES = (0.5, 1.0, 2.0, 4.0)


@dataclass(eq=False)
class StatusBatcher:
    sessionmaker: async_sessionmaker[AsyncSession]
    _waiting: list[tuple[StatusReport, asyncio.Future[bool]]] = field(
        default_factory=list, init=False
    )
    _applier: asyncio.Task[None] | None = field(default=None, init=False)

    async def apply(self, report: StatusReport) -> bool:
        """Waits for the report's commit. True when no message has its SID (yet). Raises what
        the transaction raised."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((report, done))
        if self._applier is None:
            self._applier = asyncio.create_task(self._apply_waiting())
        return await done

    async def apply_when_known(self, report: StatusReport) -> None:
        """A report whose SID no message had yet, applied once the worker has recorded it."""
        for pause in LATE_SID_PAUSES:
            await asyncio.sleep(pause)
            if not await self.apply(report):
                return
        logger.info("status callback for unknown message %s ignored", report.sid)

    async def aclose(self) -> None:
        """Lets the reports already waiting be applied."""
        if self._applier is not None:
            await asyncio.shield(self._applier)

    async def _apply_waiting(self) -> None:
        try:
            while True:
                # One turn of the loop first: callbacks already read and checked join this batch
                # rather than wait for the next (at saturation ~25 to a transaction, not ~21).
                await asyncio.sleep(0)
                if not self._waiting:
                    break
                batch = self._waiting[:MAX_BATCH]
                del self._waiting[:MAX_BATCH]
                try:
                    async with transaction(self.sessionmaker) as session:
                        unknown = await apply_reports(session, [report for report, _ in batch])
                except Exception as error:  # every waiter answers with it, as it would alone
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(error)
                    continue
                for report, done in batch:
                    if not done.done():
                        done.set_result(report.sid in unknown)
        finally:
            self._applier = None


@dataclass(eq=False)
class StatusBatchers:
    """A process' batchers: one per sessionmaker its requests use (one, but for tests)."""

    _batchers: dict[async_sessionmaker[AsyncSession], StatusBatcher] = field(
        default_factory=dict, init=False
    )

    def of(self, sessionmaker: async_sessionmaker[AsyncSession]) -> StatusBatcher:
        batcher = self._batchers.get(sessionmaker)
        if batcher is None:
            batcher = self._batchers[sessionmaker] = StatusBatcher(sessionmaker)
        return batcher

    async def aclose(self) -> None:
        for batcher in self._batchers.values():
            await batcher.aclose()
