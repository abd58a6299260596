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
    # Each entry: a report, its waiter, and whether, found early, it is to wait for its SID
    # (not so when it is tried again: it waits already).
    _waiting: list[tuple[StatusReport, asyncio.Future[bool], bool]] = field(
        default_factory=list, init=False
    )
    _applier: asyncio.Task[None] | None = field(default=None, init=False)
    # Reports whose SID no message had yet, by SID, in the order they came. A later report of
    # such a SID waits with them, and all are applied together, in order: applied at once on
    # its own, a `delivered` would make the `sent` before it stale, and its event would be lost.
    _early: dict[str, list[StatusReport]] = field(default_factory=dict, init=False)
    _retries: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    async def apply(self, report: StatusReport) -> bool:
        """Waits for the report's commit. True when no message has its SID yet: it is tried
        again in the background, with any later report of its SID. Raises what the transaction
        raised."""
        early = self._early.get(report.sid)
        if early is not None:
            early.append(report)
            return True
        return await self._submit(report, wait_if_early=True)

    async def aclose(self) -> None:
        """Lets the reports already waiting be applied, those waiting for their SID included
        (LATE_SID_PAUSES at most)."""
        await asyncio.gather(*self._retries)
        if self._applier is not None:
            await asyncio.shield(self._applier)

    async def _submit(self, report: StatusReport, *, wait_if_early: bool) -> bool:
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((report, done, wait_if_early))
        if self._applier is None:
            self._applier = asyncio.create_task(self._apply_waiting())
        return await done

    def _wait_for_sid(self, report: StatusReport) -> None:
        """Called as its transaction ends, before its caller resumes: no report of its SID
        can pass it meanwhile."""
        early = self._early.get(report.sid)
        if early is not None:
            early.append(report)
            return
        self._early[report.sid] = [report]
        retry = asyncio.create_task(self._apply_when_known(report.sid))
        self._retries.add(retry)
        retry.add_done_callback(self._retries.discard)

    async def _apply_when_known(self, sid: str) -> None:
        early = self._early[sid]
        for pause in LATE_SID_PAUSES:
            await asyncio.sleep(pause)
            try:
                while early:  # more may come while the last ones are applied
                    taken = list(early)
                    unknown = await asyncio.gather(
                        *(self._submit(report, wait_if_early=False) for report in taken)
                    )
                    if any(unknown):
                        break
                    del early[: len(taken)]
                else:
                    del self._early[sid]
                    return
            except Exception:  # tried again after the next pause, as if still unknown
                logger.exception("applying the status callbacks of %s", sid)
        del self._early[sid]
        logger.info("%d status callbacks for unknown message %s ignored", len(early), sid)

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
                        unknown = await apply_reports(session, [report for report, _, _ in batch])
                except Exception as error:  # every waiter answers with it, as it would alone
                    for _, done, _ in batch:
                        if not done.done():
                            done.set_exception(error)
                    continue
                for report, done, wait_if_early in batch:
                    if done.done():
                        continue
                    if report.sid in unknown and wait_if_early:
                        self._wait_for_sid(report)
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
