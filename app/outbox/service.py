"""Where a message is claimed and handed to Twilio, exactly once.

An attempt: claim the row (one atomic update), check the number is still allowed, then create
the message at Twilio. What happens next depends on what Twilio's answer means for a resend:
- accepted: keep the SID; callbacks and the poller take it from there;
- never processed (429, queue full, no connection): retry with exponential backoff and jitter
  within the message's validity;
- maybe processed (timeout, dropped connection, 5xx): never resend blindly; the next attempt
  first looks for the message at Twilio and adopts its SID when found;
- refused for good: the message fails at once (21610 also puts the number on the STOP list).
"""

from __future__ import annotations

import logging
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.codes import service as codes
from app.core.crypto import PhoneCipher
from app.core.database import transaction
from app.core.phone import mask_phones_in
from app.core.settings import Settings
from app.messages import repository as messages_repository
from app.messages.categories import IGNORES_SMS_ENABLED, PREFERENCE_KEY, Category
from app.messages.metrics import count_entered
from app.messages.models import Message
from app.messages.status import FROM_TWILIO, Status
from app.notifications.quiet_hours import HELD_CATEGORIES, quiet_until, recipient_zones
from app.optouts import service as optouts
from app.outbox import repository
from app.outbox.metrics import observe_lateness
from app.outbox.sender_limit import SenderBusy, SenderLimit, throttled
from app.preferences.service import get_preferences
from app.twilio.client import TwilioClient
from app.twilio.errors import (
    OPT_OUT_CODE,
    TwilioAmbiguousError,
    TwilioConfigurationError,
    TwilioError,
    TwilioPermanentError,
    TwilioRetryableError,
    meaning_of,
)
from app.twilio.schemas import NewMessage, TwilioMessage
from app.users import service as users

logger = logging.getLogger(__name__)

WEBHOOK_PATH = "/api/sms/webhook"
# Twilio's list may lag behind its create by a moment: look again after this.
RECONCILE_DELAY = timedelta(seconds=2)
# A sender queue over 10 hours deep will not drain in seconds.
_QUEUE_FULL_BASE_SECONDS = 60.0
_QUEUE_FULL_CODE = 21611
# Clocks differ: a message Twilio took may carry a date_created a little before ours.
_RECONCILE_SKEW = timedelta(minutes=5)
_RECONCILE_GRACE = timedelta(hours=1)
_RECONCILE_PAGES = 5
# Our credentials or sender are wrong: every message fails alike until an operator fixes it;
# keep them, slowly, rather than fail the whole queue.
_CONFIGURATION_BASE_SECONDS = 60.0


# What a look-up that found nothing yet is retried as.
_NOT_FOUND_YET = TwilioError("not at Twilio (yet)")


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    ADOPTED = "adopted"
    RETRY = "retry"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    NOT_CLAIMED = "not_claimed"
    HELD = "held"  # back to scheduled: the recipient's quiet hours


@dataclass(frozen=True, slots=True)
class Attempt:
    outcome: Outcome
    retry_at: datetime | None = None


class Attempting(Protocol):
    """A claimed message as an attempt's outcome reads it: the ORM row the single path claims,
    or a batch's Claimed row (app/outbox/batch.py)."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def attempts(self) -> int: ...
    @property
    def category(self) -> str: ...
    @property
    def segments(self) -> int: ...
    @property
    def to_index(self) -> bytes | None: ...
    @property
    def expires_at(self) -> datetime: ...
    @property
    def needs_reconciliation(self) -> bool: ...


def attempt_timeout_seconds(settings: Settings) -> float:
    """The longest one attempt may take: a few list pages to reconcile, then the create."""
    return settings.twilio_timeout_seconds * (_RECONCILE_PAGES + 3) + 30


@dataclass(frozen=True, slots=True)
class Outbox:
    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    cipher: PhoneCipher
    twilio: TwilioClient
    # Jitter, not secrets; tests pass a seeded one.
    random: random.Random = field(default_factory=random.Random)
    # None: no rate limit of ours per sender (SENDER_SEGMENTS_PER_SECOND=0).
    sender_limit: SenderLimit | None = None

    @property
    def lease(self) -> timedelta:
        # Outlives the job's own timeout: a worker holding a message is either done or killed
        # by arq before anyone else may claim it.
        return timedelta(seconds=attempt_timeout_seconds(self.settings) + 60)

    async def send(self, message_id: uuid.UUID, *, release: bool = False) -> Attempt:
        """`release`: the message may still be `scheduled`; its time has come."""
        async with transaction(self.sessionmaker) as session:
            if release:
                await repository.release_one(session, message_id, now=datetime.now(UTC))
            message = await repository.claim(session, message_id, self.lease)
            if message is None:
                return Attempt(Outcome.NOT_CLAIMED)
            if message.attempts == 1 and not message.needs_reconciliation:
                observe_lateness(message)
            blocked = await self._blocked(session, message)
            # A message an earlier attempt may have handed to Twilio is looked for first: if
            # Twilio has it, it is not suppressed but sent (and its callbacks must find it).
            if blocked is not None and not message.needs_reconciliation:
                await self._suppress(session, message, blocked)
                return Attempt(Outcome.SUPPRESSED)
            now = datetime.now(UTC)
            if message.expires_at <= now and not message.needs_reconciliation:
                await self._fail(session, message, None, "expired before Twilio accepted it")
                return Attempt(Outcome.FAILED)
            if not message.needs_reconciliation and await self._hold_for_quiet_hours(
                session, message, now
            ):
                return Attempt(Outcome.HELD)
            if message.attempts == 1 and not message.needs_reconciliation:
                await messages_repository.add_events(
                    session, [message.id], Status.SENDING, source="worker"
                )
                count_entered(session, Status.SENDING, [message.category])
        if message.to_encrypted is None:  # its user was erased meanwhile
            async with transaction(self.sessionmaker) as session:
                await self._finish(session, message, Status.CANCELLED, "recipient erased")
            return Attempt(Outcome.SUPPRESSED)
        to = self.cipher.decrypt(message.to_encrypted)

        if message.needs_reconciliation:
            try:
                found = await self._find_at_twilio(message, to)
            except TwilioError as error:
                return await self._retry(message, error, reconcile=True)
            if found is not None:
                await self._accepted(message, found, adopted=True)
                return Attempt(Outcome.ADOPTED)
            if self._still_looking(message):
                return await self._retry(message, _NOT_FOUND_YET, reconcile=True)
            if blocked is not None:
                async with transaction(self.sessionmaker) as session:
                    await self._suppress(session, message, blocked)
                return Attempt(Outcome.SUPPRESSED)
            if message.expires_at <= datetime.now(UTC):
                async with transaction(self.sessionmaker) as session:
                    await self._fail(session, message, None, "expired; Twilio has no trace of it")
                return Attempt(Outcome.FAILED)

        body = message.body or ""
        if message.category == Category.ONE_TIME_CODE:
            # The code is made now, as it leaves: it never waits anywhere in clear.
            async with transaction(self.sessionmaker) as session:
                issued = await codes.issue_code(session, self.settings, self.cipher, message.id)
                if issued is None:
                    await self._finish(
                        session, message, Status.CANCELLED, "code replaced, used or expired"
                    )
                    return Attempt(Outcome.SUPPRESSED)
            body = issued
        created = await self.hand_over(message, self.request_for(message, to, body))
        if isinstance(created, Attempt):
            return created
        await self._accepted(message, created, adopted=False)
        return Attempt(Outcome.ACCEPTED)

    def request_for(self, message: Attempting, to: str, body: str) -> NewMessage:
        account = self.twilio.account
        remaining = int((message.expires_at - datetime.now(UTC)).total_seconds())
        return NewMessage(
            to=to,
            body=body,
            from_number=account.from_number,
            messaging_service_sid=account.messaging_service_sid,
            status_callback=self.settings.public_base + WEBHOOK_PATH,
            validity_period=max(1, min(remaining, 36000)),
        )

    async def hand_over(self, message: Attempting, request: NewMessage) -> TwilioMessage | Attempt:
        """The create at Twilio, through the sender's rate limit: Twilio's message when it took
        it (the caller records it), else what became of the attempt, already recorded."""
        account = self.twilio.account
        sender = account.messaging_service_sid or account.from_number or ""
        try:
            if self.sender_limit is not None:  # the sender's MPS, shared by every worker
                await self.sender_limit.acquire(
                    sender, message.segments, priority=message.category == Category.ONE_TIME_CODE
                )
            return await self.twilio.create_message(request)
        except SenderBusy as busy:  # not sent: simply later
            return await self._retry(message, TwilioRetryableError(str(busy)), reconcile=False)
        except TwilioRetryableError as error:
            if self.sender_limit is not None and throttled(error):
                await self.sender_limit.backoff(sender)
            return await self._retry(message, error, reconcile=False)
        except TwilioAmbiguousError as error:
            logger.warning("ambiguous answer from Twilio for message %s: %s", message.id, error)
            return await self._retry(message, error, reconcile=True)
        except TwilioConfigurationError as error:
            logger.error(
                "Twilio refuses our configuration (message %s kept): %s", message.id, error
            )
            return await self._retry(message, error, reconcile=False)
        except TwilioPermanentError as error:
            async with transaction(self.sessionmaker) as session:
                await self._fail(session, message, error.code, error.message)
                if error.code == OPT_OUT_CODE and message.to_index is not None:
                    await optouts.opt_out(session, message.to_index, source="twilio_21610")
            return Attempt(Outcome.FAILED)
        except TwilioError as error:  # an answer we could not read: as unsure as a timeout
            return await self._retry(message, error, reconcile=True)

    async def _blocked(self, session: AsyncSession, message: Message) -> str | None:
        """Why the message must not go out now, checked at send time: a STOP or a preference
        turned off after the message was queued still counts."""
        if message.to_index is not None and await optouts.is_opted_out(session, message.to_index):
            return "opted_out"
        if message.user_id is None:
            return None
        category = Category(message.category)
        preferences = await get_preferences(session, message.user_id)
        if not preferences.sms_enabled and category not in IGNORES_SMS_ENABLED:
            return "sms_disabled"
        key = PREFERENCE_KEY[category]
        if key is not None and not getattr(preferences, key):
            return "preference_off"
        return None

    async def _hold_for_quiet_hours(
        self, session: AsyncSession, message: Message, now: datetime
    ) -> bool:
        """A marketing message that reached the front of the queue at night (a long queue, a
        retry) waits for the recipient's morning too."""
        if message.category not in HELD_CATEGORIES or message.to_encrypted is None:
            return False
        profile_zone = (
            await users.time_zone_of(session, message.user_id) if message.user_id else None
        )
        zones = recipient_zones(profile_zone, self.cipher.decrypt(message.to_encrypted))
        morning = quiet_until(
            now, zones, self.settings.quiet_hours_start, self.settings.quiet_hours_end
        )
        if morning is None:
            return False
        expires_at = morning + timedelta(seconds=self.settings.message_validity_seconds)
        if await repository.hold(
            session, message.id, message.attempts, until=morning, expires_at=expires_at
        ):
            await messages_repository.add_events(
                session,
                [message.id],
                Status.SCHEDULED,
                source="worker",
                detail="held for the recipient's quiet hours",
            )
            count_entered(session, Status.SCHEDULED, [message.category])
        return True

    def _still_looking(self, message: Message) -> bool:
        """Twilio's list may lag its create: keep looking a while before sending again."""
        since = message.ambiguous_since or message.last_attempt_at or message.created_at
        window = timedelta(seconds=self.settings.send_reconcile_window_seconds)
        return datetime.now(UTC) < since + window

    async def _find_at_twilio(self, message: Message, to: str) -> TwilioMessage | None:
        """The message Twilio may have accepted on an attempt whose answer we never read: to
        this number, from our sender, with this body, created since that attempt began."""
        since = (message.ambiguous_since or message.created_at) - _RECONCILE_SKEW
        account = self.twilio.account
        # No DateSent filter: a message Twilio still holds queued has no send date yet.
        listed = await self.twilio.list_messages(
            to=to,
            from_number=None if account.messaging_service_sid else account.from_number,
            created_since=since,
            max_pages=_RECONCILE_PAGES,
        )
        candidates = [
            candidate
            for candidate in listed
            if (candidate.date_created is None or candidate.date_created >= since)
            and self._ours(candidate)
        ]
        async with transaction(self.sessionmaker) as session:
            if message.category == Category.ONE_TIME_CODE:  # no stored body: match the code
                candidates = [
                    candidate
                    for candidate in candidates
                    if await codes.is_current_code(
                        session, self.settings, message.id, candidate.body
                    )
                ]
            else:
                candidates = [c for c in candidates if c.body == message.body]
            if not candidates:
                return None
            # An identical message of ours, sent just before, is not this one.
            taken = await repository.known_sids(session, [c.sid for c in candidates])
        fresh = [candidate for candidate in candidates if candidate.sid not in taken]
        return fresh[-1] if fresh else None  # newest first: the oldest is the likeliest

    def _ours(self, candidate: TwilioMessage) -> bool:
        account = self.twilio.account
        if account.messaging_service_sid:
            return candidate.messaging_service_sid == account.messaging_service_sid
        return candidate.from_ is None or candidate.from_ == account.from_number

    async def _accepted(
        self, message: Attempting, created: TwilioMessage, *, adopted: bool
    ) -> None:
        status = FROM_TWILIO.get(created.status, Status.SENDING)
        async with transaction(self.sessionmaker) as session:
            recorded = await repository.record_accepted(
                session,
                message.id,
                message.attempts,
                sid=created.sid,
                twilio_status=created.status,
                status=status,
                sender=created.from_ or created.messaging_service_sid,
                error_code=created.error_code,
                error_message=meaning_of(created.error_code)
                or mask_phones_in(created.error_message or "")
                or None,
            )
            if not recorded:
                logger.warning(
                    "message %s: Twilio took it (%s) after this worker lost its claim; the "
                    "newer attempt will find it there",
                    message.id,
                    created.sid,
                )
                return
            await messages_repository.add_events(
                session,
                [message.id],
                status,
                source="worker",
                twilio_status=created.status,
                error_code=created.error_code,
                detail="adopted after an ambiguous attempt" if adopted else None,
            )
            if status is not Status.SENDING:  # sending since its claim
                count_entered(session, status, [message.category])

    async def _retry(self, message: Attempting, error: TwilioError, *, reconcile: bool) -> Attempt:
        base = self.settings.send_retry_base_seconds
        if error.code == _QUEUE_FULL_CODE:
            base = max(base, _QUEUE_FULL_BASE_SECONDS)
        if isinstance(error, TwilioConfigurationError):
            base = max(base, _CONFIGURATION_BASE_SECONDS)
        ceiling = min(self.settings.send_retry_cap_seconds, base * 2 ** (message.attempts - 1))
        delay = self.random.uniform(ceiling / 2, ceiling)  # jitter: retries do not bunch
        if reconcile and not message.needs_reconciliation:
            delay = RECONCILE_DELAY.total_seconds()  # the first look, soon
        retry_at = datetime.now(UTC) + timedelta(seconds=delay)
        # Resending stops at the message's validity; looking for a message Twilio may have
        # taken goes on a while longer, so that a late answer is still recorded.
        deadline = message.expires_at + (_RECONCILE_GRACE if reconcile else timedelta())
        async with transaction(self.sessionmaker) as session:
            if retry_at >= deadline:
                await self._fail(session, message, error.code, f"gave up: {error.message}")
                return Attempt(Outcome.FAILED)
            await repository.schedule_retry(
                session,
                message.id,
                message.attempts,
                at=retry_at,
                reconcile=reconcile or message.needs_reconciliation,
                error_code=error.code,
                error_message=mask_phones_in(error.message),
            )
        return Attempt(Outcome.RETRY, retry_at)

    async def _finish(
        self, session: AsyncSession, message: Attempting, status: Status, detail: str
    ) -> None:
        if await repository.finish(session, message.id, message.attempts, status=status):
            await messages_repository.add_events(
                session, [message.id], status, source="worker", detail=detail
            )
            count_entered(session, status, [message.category])

    async def _suppress(self, session: AsyncSession, message: Attempting, reason: str) -> None:
        if await repository.finish(
            session,
            message.id,
            message.attempts,
            status=Status.SUPPRESSED,
            suppression_reason=reason,
        ):
            await messages_repository.add_events(
                session, [message.id], Status.SUPPRESSED, source="worker", detail=reason
            )
            count_entered(session, Status.SUPPRESSED, [message.category])

    async def _fail(
        self, session: AsyncSession, message: Attempting, code: int | None, detail: str
    ) -> None:
        if await repository.finish(
            session,
            message.id,
            message.attempts,
            status=Status.FAILED,
            error_code=code,
            error_message=meaning_of(code) or mask_phones_in(detail),
        ):
            await messages_repository.add_events(
                session,
                [message.id],
                Status.FAILED,
                source="worker",
                error_code=code,
                detail=mask_phones_in(detail),
            )
            count_entered(session, Status.FAILED, [message.category])
