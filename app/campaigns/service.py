"""Bulk campaigns: accepting one (every recipient checked, one message row each, written with
COPY), showing its progress, pausing, resuming and cancelling it. Sending is `chunks.py`'s."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import repeat
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.principal import Principal, Scope
from app.campaigns import repository
from app.campaigns.exceptions import CampaignFinished, CampaignNotFound
from app.campaigns.models import Campaign, CampaignState
from app.campaigns.queue import ChunkDue
from app.campaigns.repository import EventRow, MessageRow
from app.campaigns.schemas import (
    MAX_RECIPIENTS,
    BulkRecipients,
    BulkSendRequest,
    CampaignCounts,
    CampaignStatus,
    Estimate,
    InvalidNumber,
    NumberRecipient,
    Suppressed,
)
from app.campaigns.schemas import Campaign as CampaignOut
from app.core.crypto import PhoneCipher
from app.core.database import transaction
from app.core.errors import FieldError, Unprocessable
from app.core.phone import check_phone_number
from app.core.settings import Settings
from app.messages import encoding
from app.messages.categories import Category
from app.messages.exceptions import BodyTooLong, EmptyBody
from app.messages.metrics import count_entered
from app.messages.service import (
    MAX_SCHEDULE_AHEAD,
    Recipient,
    principal_ref,
    templates_dir,
    user_recipients,
)
from app.messages.status import Status
from app.notifications.exceptions import TooManyRecipients
from app.notifications.localisation import recipient_locale_and_zone
from app.notifications.overrides import PLACEHOLDER
from app.notifications.quiet_hours import quiet_until, recipient_zones
from app.notifications.rendering import DEFAULT_LOCALE, MissingTemplateData, render
from app.optouts import service as optouts
from app.topics import service as topics
from app.users import service as users
from app.users.models import User

# Recipients prepared (in a thread, off the event loop) and written (one COPY, while the
# next slice is prepared) at a time.
SLICE = 2_000
CANCEL_BATCH = 5_000
_INVALID_SHOWN = 100
_ERRORS_SHOWN = 20
_QUIET_DETAIL = "held for the recipient's quiet hours"
_CATEGORY = Category.MARKETING  # bulk is marketing: the `marketing` preference, quiet hours


@dataclass(frozen=True, slots=True)
class Launch:
    """What `create` did: the answer, and the chunk jobs to queue after the commit."""

    campaign: CampaignOut
    to_enqueue: list[ChunkDue]


# --- accepting a campaign ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    """One recipient as requested (a user id, a number), with its own data."""

    data: Mapping[str, Any] | None
    index: int = 0  # in recipients.numbers


@dataclass(slots=True)
class _Tally:
    requested: int = 0
    queued: int = 0
    scheduled: int = 0
    held: int = 0
    segments: int = 0
    suppressed: Counter[str] = field(default_factory=Counter)
    invalid: list[InvalidNumber] = field(default_factory=list)

    def estimate(self, settings: Settings) -> Estimate:
        recipients = self.queued + self.scheduled
        return Estimate(
            requested=self.requested,
            recipients=recipients,
            held_for_quiet_hours=self.held,
            suppressed=Suppressed(**self.suppressed),
            segments=self.segments,
            estimated_cost=settings.sms_estimated_price_per_segment * self.segments,
            currency=settings.sms_price_currency,
            invalid_numbers=self.invalid[:_INVALID_SHOWN],
        )


@dataclass(slots=True)
class _Chunks:
    """Messages to send, in chunks of one due time each (so a chunk job deferred to it finds
    them all due); chunk numbers in the order they are opened."""

    size: int
    opened: dict[datetime, tuple[int, int]] = field(default_factory=dict)  # due → (chunk, n)
    first_due: dict[int, datetime] = field(default_factory=dict)

    def place(self, due: datetime) -> int:
        chunk, count = self.opened.get(due, (-1, self.size))
        if count >= self.size:
            chunk, count = len(self.first_due), 0
            self.first_due[chunk] = due
        self.opened[due] = (chunk, count + 1)
        return chunk

    def earliest(self, limit: int, now: datetime) -> list[ChunkDue]:
        ordered = sorted(self.first_due.items(), key=lambda item: (item[1], item[0]))[:limit]
        return [(chunk, due if due > now else None) for chunk, due in ordered]


@dataclass(slots=True)
class _Writer:
    """Turns checked recipients into message rows and writes them a slice at a time (or only
    counts them, for a dry run)."""

    session: AsyncSession
    cipher: PhoneCipher
    settings: Settings
    request: BulkSendRequest
    campaign_id: uuid.UUID
    requested_by: str
    now: datetime
    due: datetime
    tally: _Tally
    chunks: _Chunks
    messages: list[MessageRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    entered: Counter[str] = field(default_factory=Counter)
    written: int = 0
    # The texts of recipients without data of their own: one per (locale, zone) for a
    # template, one (key ("", "")) for a body.
    texts: dict[tuple[str, str], str] = field(default_factory=dict)
    writing: asyncio.Task[None] | None = None

    def add(
        self,
        recipient: Recipient,
        data: Mapping[str, Any] | None,
        *,
        zones: tuple[ZoneInfo, ...] | None,
        field_path: str,
        index: bytes | None = None,
    ) -> None:
        """`index`: the number's blind index, when the caller has it already."""
        reason = recipient.suppression_reason
        body = self._text(recipient, data, zones, field_path)
        shape = _shape(body)
        status, send_at, due, detail = Status.SUPPRESSED, self.request.send_at, self.due, reason
        chunk = None
        if reason is not None:
            self.tally.suppressed[reason] += 1
        else:
            morning = _morning(self.due, zones, self.settings) if zones else None
            if morning is not None:
                send_at = due = morning
                detail = _QUIET_DETAIL
                self.tally.held += 1
            status = Status.SCHEDULED if due > self.now else Status.QUEUED
            if status is Status.SCHEDULED:
                self.tally.scheduled += 1
            else:
                self.tally.queued += 1
            self.tally.segments += shape.segments
            chunk = self.chunks.place(due)
        if self.request.dry_run:
            return
        e164 = recipient.e164
        message_id = uuid.uuid4()
        self.messages.append(
            MessageRow(
                id=message_id,
                user_id=recipient.user.id if recipient.user else None,
                to_encrypted=self.cipher.encrypt(e164) if e164 else None,
                to_index=index or (self.cipher.blind_index(e164) if e164 else None),
                to_region=recipient.region,
                body=body,
                category=_CATEGORY,
                status=status,
                suppression_reason=reason,
                encoding=shape.encoding,
                segments=shape.segments,
                reference=self.request.reference,
                requested_by=self.requested_by,
                send_at=send_at,
                next_attempt_at=due,
                expires_at=due + timedelta(seconds=self.settings.message_validity_seconds),
                final_at=self.now if reason is not None else None,
                campaign_id=self.campaign_id,
                campaign_chunk=chunk,
            )
        )
        self.events.append(EventRow(message_id, status, "api", detail))
        self.entered[status] += 1

    def _text(
        self,
        recipient: Recipient,
        data: Mapping[str, Any] | None,
        zones: tuple[ZoneInfo, ...] | None,
        field_path: str,
    ) -> str:
        request = self.request
        if request.body is not None:
            if data:  # a text of its own
                text = _fill(request.body, {**(request.data or {}), **data})
                return _checked(text, request.smart_encoding, field_path)
            if ("", "") not in self.texts:  # the same text for everyone
                text = _fill(request.body, request.data)
                self.texts[("", "")] = _checked(text, request.smart_encoding, field_path)
            return self.texts[("", "")]
        assert request.template is not None
        if recipient.user is not None:
            locale, zone = recipient_locale_and_zone(recipient.user, recipient.e164)
        else:
            locale = request.locale or DEFAULT_LOCALE
            zone = (zones or (ZoneInfo("UTC"),))[0].key
        if data:  # a text of its own
            values = {**(request.data or {}), **data}
            rendered = render(request.template, values, locale, zone, overrides_dir=self._dir)
            return _checked(rendered, request.smart_encoding, field_path)
        if (locale, zone) not in self.texts:  # a few (locale, zone) pairs for everyone
            rendered = render(
                request.template, request.data or {}, locale, zone, overrides_dir=self._dir
            )
            self.texts[(locale, zone)] = _checked(rendered, request.smart_encoding, field_path)
        return self.texts[(locale, zone)]

    @property
    def _dir(self) -> Path | None:
        return templates_dir(self.settings)

    async def write_behind(self) -> None:
        """Waits for the slice being written, then starts writing (one COPY) the one just
        prepared: PostgreSQL takes it in while the next slice is prepared."""
        await self.settle()
        if self.messages:
            rows = self.messages, self.events, self.entered
            self.messages, self.events, self.entered = [], [], Counter()
            self.writing = asyncio.create_task(self._write(*rows))

    async def settle(self) -> None:
        """The slice being written, written (the connection is free again)."""
        if self.writing is not None:
            writing, self.writing = self.writing, None
            await writing

    async def _write(
        self, messages: list[MessageRow], events: list[EventRow], entered: Counter[str]
    ) -> None:
        await repository.copy_messages(self.session, messages, events)
        self.written += len(messages)
        for status, count in entered.items():
            count_entered(self.session, status, repeat(_CATEGORY, count))


def _fill(body: str, values: Mapping[str, Any] | None) -> str:
    def replace(match: Any) -> str:
        matched: str = match.group(0)
        if matched in ("{{", "}}"):
            return matched[0]
        return str((values or {})[match.group(1)])

    return PLACEHOLDER.sub(replace, body)


def _checked(text: str, smart_encoding: bool, field_path: str) -> str:
    final = encoding.smart_encode(text) if smart_encoding else text
    if not final.strip():
        detail = f"{field_path}: the text has no visible characters"
        raise EmptyBody(detail, errors=[FieldError(field=field_path, message=detail, type="empty")])
    if len(final) > encoding.MAX_BODY_CHARACTERS:
        detail = (
            f"{field_path}: the text has {len(final)} characters; at most "
            f"{encoding.MAX_BODY_CHARACTERS} fit in one SMS message"
        )
        raise BodyTooLong(
            detail, errors=[FieldError(field=field_path, message=detail, type="too_long")]
        )
    return final


@lru_cache(maxsize=4096)
def _shape(text: str) -> encoding.BodyShape:
    return encoding.shape(text)


def _morning(due: datetime, zones: tuple[ZoneInfo, ...], settings: Settings) -> datetime | None:
    return _quiet_until(due, zones, settings.quiet_hours_start, settings.quiet_hours_end)


# A campaign's recipients share a few zones and one due time.
_quiet_until = lru_cache(maxsize=1024)(quiet_until)


@lru_cache(maxsize=1024)
def _zones(keys: tuple[str, ...]) -> tuple[ZoneInfo, ...]:
    """A number's zones (from its check, already made) as recipient_zones gives them."""
    zones = tuple(zone for key in keys for zone in recipient_zones(key, None) if zone.key == key)
    return zones or recipient_zones(None, None)


def _placeholders(body: str | None) -> frozenset[str]:
    if body is None:
        return frozenset()
    return frozenset(match.group(1) for match in PLACEHOLDER.finditer(body) if match.group(1))


def _check_placeholder_data(
    request: BulkSendRequest, named: Sequence[_Entry], numbers: Sequence[_Entry], topic: bool
) -> None:
    """Every recipient has a value for every placeholder (its own, or the shared one); else
    nothing is stored, and the first ones missing are named."""
    needed = _placeholders(request.body) - set(request.data or {})
    if not needed:
        return
    errors: list[FieldError] = []

    def missing(entries: Iterable[_Entry], path: str) -> None:
        for position, entry in enumerate(entries):
            for name in sorted(needed - set(entry.data or {})):
                errors.append(
                    FieldError(
                        field=f"{path}.{position}.data.{name}",
                        message="no value for this placeholder here or in `data`",
                        type="missing",
                    )
                )

    missing(named, "body.recipients.user_ids")
    missing(numbers, "body.recipients.numbers")
    if topic:
        errors += [
            FieldError(
                field=f"body.data.{name}", message="topic subscribers need it", type="missing"
            )
            for name in sorted(needed)
        ]
    if errors:
        names = ", ".join(sorted({error.field.rsplit(".", 1)[1] for error in errors}))
        raise MissingTemplateData(
            f"{len(errors)} placeholder values missing ({names})", errors=errors[:_ERRORS_SHOWN]
        )


_Person = tuple[User, Mapping[str, Any] | None, str]  # the user, their data, their field


def _people(
    named_ids: Sequence[str],
    named: Sequence[_Entry],
    found: Mapping[str, User],
    subscribers: Sequence[User],
    tally: _Tally,
) -> list[_Person]:
    """The users, named first then the topic's, each once (unknown ones counted)."""
    people: list[_Person] = []
    seen: set[uuid.UUID] = set()
    for position, (external_id, entry) in enumerate(zip(named_ids, named, strict=True)):
        user = found.get(external_id)
        if user is None:
            tally.suppressed["unknown_user"] += 1
        elif user.id in seen:
            tally.suppressed["duplicate"] += 1
        else:
            seen.add(user.id)
            people.append((user, entry.data, f"body.recipients.user_ids.{position}"))
    for user in subscribers:
        if user.id in seen:
            tally.suppressed["duplicate"] += 1
        else:
            seen.add(user.id)
            people.append((user, None, "body.data"))
    return people


async def create(
    session: AsyncSession,
    cipher: PhoneCipher,
    settings: Settings,
    principal: Principal,
    request: BulkSendRequest,
) -> Launch:
    """Checks every recipient (number, verification, `marketing` preference, STOP, quiet
    hours, duplicates), then writes one message each, a slice at a time (nothing for a dry
    run). Anything refused (too many recipients, missing placeholder values, a text too long)
    stores nothing: the request is one transaction."""
    now = datetime.now(UTC)
    if request.send_at is not None and request.send_at - now > MAX_SCHEDULE_AHEAD:
        detail = f"`send_at` is at most {MAX_SCHEDULE_AHEAD.days} days ahead"
        raise Unprocessable(
            detail, errors=[FieldError(field="body.send_at", message=detail, type="too_far")]
        )
    due = request.send_at if request.send_at is not None and request.send_at > now else now
    wanted = request.recipients
    named = [
        _Entry(None) if isinstance(item, str) else _Entry(item.data) for item in wanted.user_ids
    ]
    named_ids = [item if isinstance(item, str) else item.user_id for item in wanted.user_ids]
    numbers = [
        _Entry(item.data if isinstance(item, NumberRecipient) else None, index=index)
        for index, item in enumerate(wanted.numbers)
    ]
    _check_placeholder_data(request, named, numbers, wanted.topic is not None)
    found = await users.find_users(session, list(dict.fromkeys(named_ids)))
    subscribers: list[User] = []
    if wanted.topic is not None:
        subscribers = await topics.subscriber_users(session, wanted.topic, limit=MAX_RECIPIENTS + 1)
    tally = _Tally(requested=len(named) + len(numbers) + len(subscribers))
    if tally.requested > MAX_RECIPIENTS:
        raise TooManyRecipients(
            f"at most {MAX_RECIPIENTS} recipients in one campaign (user ids, numbers and the "
            f"topic's {len(subscribers)} subscribers make {tally.requested})"
        )

    campaign = Campaign(
        id=uuid.uuid4(),
        state=CampaignState.ACTIVE,
        requested_by=principal_ref(principal),
        reference=request.reference,
        send_at=request.send_at,
        messages=0,
        chunks=0,
        estimate={},
    )
    if not request.dry_run:  # the messages' foreign key needs it first
        await repository.add(session, campaign)
    writer = _Writer(
        session,
        cipher,
        settings,
        request,
        campaign.id,
        campaign.requested_by,
        now,
        due,
        tally,
        _Chunks(settings.campaign_chunk_size),
    )

    people = _people(named_ids, named, found, subscribers, tally)
    checked = await user_recipients(session, cipher, settings, [p[0] for p in people], _CATEGORY)
    # Users first, so that a number given again further on is a duplicate of theirs and their
    # preferences decide.
    seen_numbers: set[str] = set()
    try:
        for start in range(0, len(people), SLICE):
            part = zip(checked[start : start + SLICE], people[start : start + SLICE], strict=True)
            await asyncio.to_thread(_add_users, writer, list(part), seen_numbers)
            await writer.write_behind()
        for start in range(0, len(numbers), SLICE):
            entries = numbers[start : start + SLICE]
            ready = await asyncio.to_thread(_check_numbers, writer, wanted, entries, seen_numbers)
            await writer.settle()  # the STOP list is read on the same connection
            stopped = await optouts.opted_out_among(session, [item.index for item in ready])
            await asyncio.to_thread(_add_numbers, writer, ready, stopped)
            await writer.write_behind()
    finally:  # never leave a COPY running on the connection, even on the way out
        await writer.settle()

    estimate = tally.estimate(settings)
    sendable = tally.queued + tally.scheduled
    if request.dry_run:
        out = CampaignOut(
            id=None,
            status=None,
            dry_run=True,
            reference=request.reference,
            send_at=request.send_at,
            created_at=None,
            finished_at=None,
            estimate=estimate,
            counts=None,
        )
        return Launch(out, [])
    campaign.messages = writer.written
    campaign.chunks = len(writer.chunks.first_due)
    campaign.estimate = estimate.model_dump(mode="json")
    if sendable == 0:  # nobody to send to: nothing will ever be due
        campaign.state = CampaignState.COMPLETED
        campaign.finished_at = now
    await session.flush()
    if sendable:
        await repository.analyze_if_grown(session, writer.written)
    counts = CampaignCounts(
        queued=tally.queued,
        scheduled=tally.scheduled,
        suppressed=writer.written - sendable,
        total=writer.written,
    )
    out = _out(campaign, counts, _status(campaign.state, counts, pending=sendable))
    return Launch(out, writer.chunks.earliest(settings.campaign_parallel_chunks, now))


# The CPU-bound part of a slice (numbers parsed, encrypted, texts rendered) runs in a thread:
# the event loop, and the other requests it serves, go on meanwhile.


def _add_users(writer: _Writer, part: Sequence[tuple[Recipient, _Person]], seen: set[str]) -> None:
    for recipient, (user, data, path) in part:
        if recipient.e164 is not None:
            if recipient.e164 in seen:
                writer.tally.suppressed["duplicate"] += 1
                continue
            seen.add(recipient.e164)
        zones = None
        if recipient.e164 is not None and recipient.suppression_reason is None:
            zones = recipient_zones(user.time_zone, recipient.e164)
        writer.add(recipient, data, zones=zones, field_path=path)


@dataclass(frozen=True, slots=True)
class _Checked:
    recipient: Recipient
    entry: _Entry
    zones: tuple[ZoneInfo, ...]
    index: bytes  # the number's blind index, for the STOP list


def _check_numbers(
    writer: _Writer, wanted: BulkRecipients, entries: Sequence[_Entry], seen: set[str]
) -> list[_Checked]:
    """A slice of the numbers: parsed, judged, de-duplicated (the STOP list is next)."""
    tally, settings = writer.tally, writer.settings
    ready = []
    for entry in entries:
        item = wanted.numbers[entry.index]
        raw = item if isinstance(item, str) else item.to
        check = check_phone_number(raw, wanted.country, settings.default_phone_region)
        reason = _unusable(check)
        if reason is not None:
            tally.suppressed["invalid_number"] += 1
            if len(tally.invalid) < _INVALID_SHOWN:
                tally.invalid.append(InvalidNumber(index=entry.index, reason=reason))
            continue
        assert check.e164 is not None
        if check.e164 in seen:
            tally.suppressed["duplicate"] += 1
            continue
        seen.add(check.e164)
        suppression = None
        if settings.sms_allowed_countries and check.region not in settings.sms_allowed_countries:
            suppression = "country_not_allowed"
        recipient = Recipient(check.e164, check.region, None, suppression)
        index = writer.cipher.blind_index(check.e164)
        ready.append(_Checked(recipient, entry, _zones(check.time_zones), index))
    return ready


def _add_numbers(writer: _Writer, ready: Sequence[_Checked], stopped: set[bytes]) -> None:
    for item in ready:
        recipient = item.recipient
        if recipient.suppression_reason is None and item.index in stopped:
            recipient = Recipient(recipient.e164, recipient.region, None, "opted_out")
        writer.add(
            recipient,
            item.entry.data,
            zones=item.zones,
            field_path=f"body.recipients.numbers.{item.entry.index}",
            index=item.index,
        )


def _unusable(check: Any) -> str | None:
    """Why a number cannot be sent to, as normalize_sms_number says it, or None."""
    if not check.valid:
        return str(check.reason_code or "invalid")
    if not check.sms_capable:
        return "not_sms_capable"
    if check.region is None or len(check.region) != 2:
        return "non_geographic"
    return None


# --- showing, pausing, resuming, cancelling -------------------------------------------------


def _status(state: str, counts: CampaignCounts, *, pending: int) -> CampaignStatus:
    if state != CampaignState.ACTIVE:
        return CampaignStatus(state)
    if pending == 0:
        return CampaignStatus.COMPLETED
    started = counts.queued + counts.sending + counts.sent + counts.delivered
    started += counts.undelivered + counts.failed
    return CampaignStatus.RUNNING if started else CampaignStatus.SCHEDULED


def _out(campaign: Campaign, counts: CampaignCounts, status: CampaignStatus) -> CampaignOut:
    return CampaignOut(
        id=campaign.id,
        status=status,
        dry_run=False,
        reference=campaign.reference,
        send_at=campaign.send_at,
        created_at=campaign.created_at,
        finished_at=campaign.finished_at,
        estimate=Estimate.model_validate(campaign.estimate),
        counts=counts,
    )


async def _describe(session: AsyncSession, campaign: Campaign) -> CampaignOut:
    rows = await repository.counts(session, campaign.id)
    tallied: Counter[str] = Counter()
    pending = 0
    for (status, at_twilio), count in rows.items():
        tallied[status] += count
        if status in (Status.QUEUED, Status.SCHEDULED) or (
            status == Status.SENDING and not at_twilio
        ):
            pending += count
    counts = CampaignCounts(**tallied, total=sum(tallied.values()))
    return _out(campaign, counts, _status(campaign.state, counts, pending=pending))


async def _own(
    session: AsyncSession,
    principal: Principal,
    campaign_id: uuid.UUID,
    *,
    for_update: bool = False,
    reading: bool = False,
) -> Campaign:
    """The campaign, if the caller asked for it (or is an admin; `reading`: or has sms:read)."""
    campaign = await repository.get(session, campaign_id, for_update=for_update)
    allowed = principal.can(Scope.SMS_READ) if reading else principal.is_admin
    # Someone else's campaign is "not found": its existence is not the caller's business.
    if campaign is None or not (allowed or campaign.requested_by == principal_ref(principal)):
        raise CampaignNotFound(f"no campaign {campaign_id}")
    return campaign


async def get_campaign(
    session: AsyncSession, principal: Principal, campaign_id: uuid.UUID
) -> CampaignOut:
    return await _describe(session, await _own(session, principal, campaign_id, reading=True))


async def pause(session: AsyncSession, principal: Principal, campaign_id: uuid.UUID) -> CampaignOut:
    """From its commit on, no worker claims one of its messages; those already handed to
    Twilio go on. Pausing a paused campaign changes nothing."""
    campaign = await _own(session, principal, campaign_id, for_update=True)
    if campaign.state == CampaignState.ACTIVE:
        if not await repository.has_pending(session, campaign.id):
            raise CampaignFinished("the campaign has completed: there is nothing left to pause")
        await repository.set_state(session, campaign.id, CampaignState.PAUSED)
        campaign.state = CampaignState.PAUSED
    elif campaign.state != CampaignState.PAUSED:
        raise CampaignFinished(f"the campaign is {campaign.state}: it cannot be paused")
    return await _describe(session, campaign)


async def resume(
    session: AsyncSession, settings: Settings, principal: Principal, campaign_id: uuid.UUID
) -> Launch:
    """Active again; its chunks with messages due are queued (after the commit) up to
    CAMPAIGN_PARALLEL_CHUNKS, the rest follow as those finish."""
    campaign = await _own(session, principal, campaign_id, for_update=True)
    if campaign.state not in (CampaignState.ACTIVE, CampaignState.PAUSED):
        raise CampaignFinished(f"the campaign is {campaign.state}: it cannot be resumed")
    if campaign.state == CampaignState.PAUSED:
        await repository.set_state(session, campaign.id, CampaignState.ACTIVE)
        campaign.state = CampaignState.ACTIVE
    chunks = await repository.chunks_to_start(
        session, campaign.id, now=datetime.now(UTC), limit=settings.campaign_parallel_chunks
    )
    return Launch(await _describe(session, campaign), [(chunk, None) for chunk in chunks])


async def cancel(
    sessionmaker: async_sessionmaker[AsyncSession], principal: Principal, campaign_id: uuid.UUID
) -> CampaignOut:
    """Cancelled at once (no worker claims its messages from then on), then its messages not
    yet handed to Twilio are cancelled in batches, each its own short transaction; those at
    Twilio go on and are counted. Cancelling again finishes what a cut-short call left."""
    async with transaction(sessionmaker) as session:
        campaign = await _own(session, principal, campaign_id, for_update=True)
        if campaign.state == CampaignState.COMPLETED or (
            campaign.state == CampaignState.ACTIVE
            and not await repository.has_pending(session, campaign.id)
        ):
            raise CampaignFinished("the campaign has completed: there is nothing left to cancel")
        await repository.set_state(session, campaign.id, CampaignState.CANCELLED)
    await finish_cancelling(sessionmaker, campaign_id)
    async with transaction(sessionmaker) as session:
        found = await repository.get(session, campaign_id)
        assert found is not None
        return await _describe(session, found)


async def finish_cancelling(
    sessionmaker: async_sessionmaker[AsyncSession], campaign_id: uuid.UUID
) -> int:
    """Cancels a cancelled campaign's messages that Twilio cannot have, in batches; marks it
    finished once none is left that might still go (an attempt in flight settles first)."""
    cancelled = 0
    while True:
        async with transaction(sessionmaker) as session:
            done = await repository.cancel_batch(session, campaign_id, limit=CANCEL_BATCH)
        cancelled += done
        if done == 0:
            break
    async with transaction(sessionmaker) as session:
        cancelled += await repository.cancel_retries(session, campaign_id)
        if not await repository.has_pending(session, campaign_id):
            await repository.set_state(session, campaign_id, CampaignState.CANCELLED, finished=True)
    return cancelled
