"""Sending many messages at once (a campaign chunk's), with the single path's rules and
outcomes, in a few statements per batch instead of a few per message.

A batch: one statement claims its plain messages (app/outbox/repository.claim_batch: the
claim's conditions and values, for messages neither a dead worker's, nor to reconcile, nor a
one-time code; those take the single path, Outbox.send). In the same transaction the send-time
checks run set-based (one query for STOPs, one for preferences, one for time zones when quiet
hours apply; expiry in Python), and what must not go is suppressed, failed, cancelled or held
in one statement each, with its events in one INSERT. Then the creates at Twilio run a bounded
number at once (the worker's gate), each through the sender's rate limit as Outbox.hand_over
does it; what Twilio took is recorded in one statement (guarded by each claim, as
record_accepted), and every other answer goes through the outbox's own per-message handling
(retry, reconcile, fail, 21610's opt-out), so it is recorded exactly as the single path does.
Creates not started when `proceed` says stop (a paused or cancelled campaign, a spent budget)
or when the batch's claims grow old are given back, untouched at Twilio.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.database import transaction
from app.core.phone import mask_phones_in
from app.messages.categories import IGNORES_SMS_ENABLED, PREFERENCE_KEY, Category
from app.messages.metrics import count_entered
from app.messages.repository import NewEvent, add_event_rows
from app.messages.status import FROM_TWILIO, Status
from app.notifications.quiet_hours import HELD_CATEGORIES, quiet_until, recipient_zones
from app.optouts import service as optouts
from app.outbox import repository
from app.outbox.metrics import observe_lateness
from app.outbox.repository import Accepted, Claimed, Finished, Held
from app.outbox.service import Attempt, Outbox, Outcome
from app.preferences import service as preferences
from app.twilio.errors import meaning_of
from app.twilio.schemas import TwilioMessage
from app.users import service as users

logger = logging.getLogger(__name__)

# Messages claimed at once: a few statements for this many, and few enough that a pause
# gives back little and Twilio's callbacks rarely beat the recording of their SID.
BATCH_SIZE = 100
# What Twilio took is recorded at the batch's end, or sooner once the oldest unrecorded SID is
# this old (a slow batch): a status callback for a SID not recorded yet waits only so long.
RECORD_WITHIN_SECONDS = 0.5
# A create starts only while its claim has at least an attempt's time left of its lease.
_LEASE_MARGIN_SECONDS = 60.0

Proceed = Callable[[], Awaitable[bool]]


async def _always() -> bool:
    return True


@dataclass(frozen=True, slots=True)
class BatchResult:
    # What became of each message the batch did not give back (not claimed included).
    attempts: dict[uuid.UUID, Attempt]
    # Claimed but not handed to Twilio, as `proceed` said stop: free again, untouched.
    given_back: list[uuid.UUID]
    # Messages whose attempt raised (logged): their claim runs out, as a dead worker's.
    errors: int = 0


@dataclass
class _Batch:
    outbox: Outbox
    gate: asyncio.Semaphore
    proceed: Proceed
    claimed_at: float = 0.0
    attempts: dict[uuid.UUID, Attempt] = field(default_factory=dict)
    given_back: list[Claimed] = field(default_factory=list)
    unrecorded: list[tuple[Claimed, TwilioMessage]] = field(default_factory=list)
    oldest_unrecorded: float = 0.0
    errors: int = 0
    stopped: bool = False

    # --- claim and checks: one transaction -------------------------------------------------

    async def claim(
        self, message_ids: Sequence[uuid.UUID], release: Sequence[uuid.UUID]
    ) -> tuple[list[Claimed], list[uuid.UUID]]:
        """The plain messages claimed and cleared to go, and those for the single path.
        `release`: scheduled ones among them whose time may have come."""
        outbox = self.outbox
        async with transaction(outbox.sessionmaker) as session:
            await repository.release_due(session, release, now=datetime.now(UTC))
            claims = await repository.claim_batch(session, message_ids, outbox.lease)
            self.claimed_at = time.monotonic()
            taken = {claim.id for claim in claims}
            single = await repository.for_single_path(
                session, [message_id for message_id in message_ids if message_id not in taken]
            )
            for message_id in message_ids:
                if message_id not in taken and message_id not in single:
                    self.attempts[message_id] = Attempt(Outcome.NOT_CLAIMED)
            if not claims:
                return [], single
            for claim in claims:
                if claim.attempts == 1:  # never a message to reconcile (see claim_batch)
                    observe_lateness(claim)
            opted_out = await optouts.opted_out_among(
                session, [claim.to_index for claim in claims if claim.to_index is not None]
            )
            switches = await preferences.switches_of(
                session, [claim.user_id for claim in claims if claim.user_id is not None]
            )
            now = datetime.now(UTC)
            finished: list[Finished] = []
            finished_events: list[NewEvent] = []
            outcome_of: dict[uuid.UUID, Outcome] = {}
            maybe_held: list[Claimed] = []
            for claim in claims:
                blocked = _blocked(claim, opted_out, switches)
                if blocked is not None:
                    finished.append(
                        Finished(
                            claim.id,
                            claim.attempts,
                            Status.SUPPRESSED,
                            suppression_reason=blocked,
                        )
                    )
                    finished_events.append(
                        NewEvent(claim.id, Status.SUPPRESSED, "worker", detail=blocked)
                    )
                    outcome_of[claim.id] = Outcome.SUPPRESSED
                elif claim.expires_at <= now:
                    detail = "expired before Twilio accepted it"
                    finished.append(
                        Finished(
                            claim.id,
                            claim.attempts,
                            Status.FAILED,
                            error_code=None,
                            error_message=meaning_of(None) or mask_phones_in(detail),
                        )
                    )
                    finished_events.append(
                        NewEvent(claim.id, Status.FAILED, "worker", detail=mask_phones_in(detail))
                    )
                    outcome_of[claim.id] = Outcome.FAILED
                else:
                    maybe_held.append(claim)
            held, going = await self._quiet_hours(session, maybe_held, now)
            held_events = [
                NewEvent(
                    row.id,
                    Status.SCHEDULED,
                    "worker",
                    detail="held for the recipient's quiet hours",
                )
                for row in held
            ]
            for row in held:
                outcome_of[row.id] = Outcome.HELD
            sending = [claim for claim in going if claim.attempts == 1]
            erased = [claim for claim in going if claim.to_encrypted is None]
            for claim in erased:  # its user was erased meanwhile
                finished.append(Finished(claim.id, claim.attempts, Status.CANCELLED))
                finished_events.append(
                    NewEvent(claim.id, Status.CANCELLED, "worker", detail="recipient erased")
                )
                outcome_of[claim.id] = Outcome.SUPPRESSED
            done = await repository.finish_batch(session, finished)
            held_ids = await repository.hold_batch(session, held)
            by_id = {claim.id: claim for claim in claims}
            await add_event_rows(
                session,
                [
                    *(NewEvent(claim.id, Status.SENDING, "worker") for claim in sending),
                    *(event for event in finished_events if event.message_id in done),
                    *(event for event in held_events if event.message_id in held_ids),
                ],
            )
            count_entered(session, Status.SENDING, [claim.category for claim in sending])
            for ended in finished:
                if ended.id in done:
                    count_entered(session, ended.status, [by_id[ended.id].category])
            count_entered(session, Status.SCHEDULED, [by_id[i].category for i in held_ids])
        for message_id, outcome in outcome_of.items():
            self.attempts[message_id] = Attempt(outcome)
        return [claim for claim in going if claim.to_encrypted is not None], single

    async def _quiet_hours(
        self, session: AsyncSession, claims: list[Claimed], now: datetime
    ) -> tuple[list[Held], list[Claimed]]:
        """Of these, the marketing messages that would land in their recipient's quiet hours
        (held until the morning) and the others (going now)."""
        settings = self.outbox.settings
        subject = [
            claim
            for claim in claims
            if claim.category in HELD_CATEGORIES and claim.to_encrypted is not None
        ]
        # start == end: never quiet; the zones (a decryption and a libphonenumber look-up per
        # message, ~6% of a worker's CPU in a campaign) would change nothing.
        if not subject or settings.quiet_hours_start == settings.quiet_hours_end:
            return [], claims
        zones_of = await users.time_zones_of(
            session, [claim.user_id for claim in subject if claim.user_id is not None]
        )
        held: list[Held] = []
        for claim in subject:
            assert claim.to_encrypted is not None
            profile_zone = zones_of.get(claim.user_id) if claim.user_id else None
            zones = recipient_zones(profile_zone, self.outbox.cipher.decrypt(claim.to_encrypted))
            morning = quiet_until(now, zones, settings.quiet_hours_start, settings.quiet_hours_end)
            if morning is not None:
                expires_at = morning + timedelta(seconds=settings.message_validity_seconds)
                held.append(Held(claim.id, claim.attempts, morning, expires_at))
        held_ids = {row.id for row in held}
        return held, [claim for claim in claims if claim.id not in held_ids]

    # --- creates at Twilio ---------------------------------------------------------------

    async def hand_over(self, claims: list[Claimed], lanes: int) -> None:
        queue = iter(claims)  # shared by the lanes: each message is taken once
        lease_left = self.outbox.lease.total_seconds() - _LEASE_MARGIN_SECONDS

        async def lane() -> None:
            for claim in queue:
                async with self.gate:
                    if (
                        self.stopped
                        or time.monotonic() - self.claimed_at > lease_left
                        or not await self.proceed()
                    ):
                        self.stopped = True
                        self.given_back.append(claim)
                        continue  # the rest of the queue is given back too
                    try:
                        await self._create(claim)
                    except Exception:  # one message's trouble must not stop the others
                        logger.exception("sending message %s", claim.id)
                        self.errors += 1

        await asyncio.gather(*(lane() for _ in range(min(lanes, len(claims)))))
        await self.record()

    async def _create(self, claim: Claimed) -> None:
        outbox = self.outbox
        assert claim.to_encrypted is not None
        to = outbox.cipher.decrypt(claim.to_encrypted)
        created = await outbox.hand_over(claim, outbox.request_for(claim, to, claim.body or ""))
        if isinstance(created, Attempt):  # not taken: recorded by the outbox as ever
            self.attempts[claim.id] = created
            return
        self.attempts[claim.id] = Attempt(Outcome.ACCEPTED)
        if not self.unrecorded:
            self.oldest_unrecorded = time.monotonic()
        self.unrecorded.append((claim, created))
        if time.monotonic() - self.oldest_unrecorded > RECORD_WITHIN_SECONDS:
            await self.record()

    async def record(self) -> None:
        """What Twilio took, in one statement guarded by each claim (record_accepted's)."""
        taken, self.unrecorded = self.unrecorded, []
        if not taken:
            return
        rows = [
            Accepted(
                claim.id,
                claim.attempts,
                sid=created.sid,
                twilio_status=created.status,
                status=FROM_TWILIO.get(created.status, Status.SENDING),
                sender=created.from_ or created.messaging_service_sid,
                error_code=created.error_code,
                error_message=meaning_of(created.error_code)
                or mask_phones_in(created.error_message or "")
                or None,
            )
            for claim, created in taken
        ]
        try:
            async with transaction(self.outbox.sessionmaker) as session:
                recorded = await repository.record_accepted_batch(session, rows)
                await add_event_rows(
                    session,
                    [
                        NewEvent(
                            row.id,
                            row.status,
                            "worker",
                            twilio_status=row.twilio_status,
                            error_code=row.error_code,
                        )
                        for row in rows
                        if row.id in recorded
                    ],
                )
                for (claim, _), row in zip(taken, rows, strict=True):
                    if row.id in recorded and row.status is not Status.SENDING:
                        count_entered(session, row.status, [claim.category])
        except Exception:  # their claims run out: the next attempts find them at Twilio
            logger.exception("recording %d messages Twilio took", len(rows))
            self.errors += len(rows)
            return
        for row in rows:
            if row.id not in recorded:
                logger.warning(
                    "message %s: Twilio took it (%s) after this worker lost its claim; the "
                    "newer attempt will find it there",
                    row.id,
                    row.sid,
                )

    async def send_single(self, message_id: uuid.UUID) -> None:
        async with self.gate:
            if self.stopped or not await self.proceed():
                self.stopped = True
                return
            try:
                self.attempts[message_id] = await self.outbox.send(message_id)
            except Exception:
                logger.exception("sending message %s", message_id)
                self.errors += 1

    async def give_back(self) -> list[uuid.UUID]:
        if not self.given_back:
            return []
        reason = "not sent: its campaign stopped"
        async with transaction(self.outbox.sessionmaker) as session:
            queued = await repository.give_back(
                session, [(claim.id, claim.attempts) for claim in self.given_back]
            )
            await add_event_rows(
                session,
                [
                    NewEvent(message_id, Status.QUEUED, "worker", detail=reason)
                    for message_id, _ in queued
                ],
            )
            count_entered(session, Status.QUEUED, [category for _, category in queued])
        return [claim.id for claim in self.given_back]


def _blocked(
    claim: Claimed, opted_out: set[bytes], switches: dict[uuid.UUID, dict[str, bool]]
) -> str | None:
    """Outbox._blocked, from the batch's look-ups."""
    if claim.to_index is not None and claim.to_index in opted_out:
        return "opted_out"
    if claim.user_id is None:
        return None
    category = Category(claim.category)
    # A user without preferences is a broken invariant: fail loudly, as the single path does.
    on = switches[claim.user_id]
    if not on["sms_enabled"] and category not in IGNORES_SMS_ENABLED:
        return "sms_disabled"
    key = PREFERENCE_KEY[category]
    if key is not None and not on[key]:
        return "preference_off"
    return None


async def send_batch(
    outbox: Outbox,
    message_ids: Sequence[uuid.UUID],
    *,
    gate: asyncio.Semaphore,
    proceed: Proceed = _always,
    lanes: int | None = None,
    release: Sequence[uuid.UUID] = (),
) -> BatchResult:
    """Up to BATCH_SIZE messages, each exactly as Outbox.send would send it; `gate` bounds the
    creates in flight (shared by the caller's batches), `proceed` is asked before each.
    `release`: those of them that are scheduled, due by now (deferred jobs)."""
    batch = _Batch(outbox, gate, proceed)
    going, single = await batch.claim(message_ids, release)
    # A dead worker's message, one to reconcile, a code: each by the single path, beside the
    # batch's creates rather than after them (a code waits for no one).
    await asyncio.gather(
        batch.hand_over(going, lanes or outbox.settings.campaign_concurrency),
        *(batch.send_single(message_id) for message_id in single),
    )
    given_back = await batch.give_back()
    return BatchResult(batch.attempts, given_back, batch.errors)
