"""Accepting messages: recipient, checks, encoding, the outbox row. Sending is the outbox's job."""

from __future__ import annotations

import base64
import binascii
import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal, Scope
from app.core.crypto import PhoneCipher
from app.core.errors import FieldError, Forbidden, Unprocessable
from app.core.phone import InvalidPhoneNumber, mask_phone, normalize_sms_number
from app.core.settings import Settings
from app.core.types import plausible_moment
from app.messages import encoding, repository
from app.messages.categories import BODY_NOT_STORED, IGNORES_SMS_ENABLED, PREFERENCE_KEY, Category
from app.messages.exceptions import (
    BodyTooLong,
    CountryNotAllowed,
    EmptyBody,
    MessageNotFound,
    NoPhoneNumber,
    NotCancellable,
    PhoneNotVerified,
    RecipientOptedOut,
)
from app.messages.metrics import count_entered
from app.messages.models import Message, MessageEvent
from app.messages.repository import MessageFilter
from app.messages.schemas import (
    AuditEvent,
    MessageAudit,
    MessageOut,
    MessagePage,
    SelfTestRequest,
    SendRequest,
    StatusChange,
)
from app.messages.status import Status
from app.notifications.localisation import recipient_locale_and_zone
from app.notifications.quiet_hours import HELD_CATEGORIES, quiet_until, recipient_zones
from app.notifications.rendering import render
from app.optouts import service as optouts
from app.preferences.schemas import Preferences
from app.preferences.service import get_many as get_many_preferences
from app.twilio.errors import meaning_of
from app.users import service as users
from app.users.exceptions import InvalidPhoneNumberError
from app.users.models import User

MAX_SCHEDULE_AHEAD = timedelta(days=90)


@dataclass(frozen=True, slots=True)
class Recipient:
    e164: str | None
    region: str | None
    user: User | None = None
    suppression_reason: str | None = None


def principal_ref(principal: Principal) -> str:
    """How a message records who asked for it (audit)."""
    return f"{principal.kind}:{principal.id}"


async def send(
    session: AsyncSession,
    cipher: PhoneCipher,
    settings: Settings,
    principal: Principal,
    request: SendRequest,
) -> MessageOut:
    category = request.resolved_category
    if request.user_id is not None:
        user = await users.get_user(session, request.user_id)
        [recipient] = await user_recipients(session, cipher, settings, [user], category)
    else:
        assert request.to is not None
        recipient = _direct_recipient(settings, request.to, request.country, field="body.to")
    if request.template is not None:
        locale, zone = recipient_locale_and_zone(recipient.user, recipient.e164, request.locale)
        zone = request.time_zone or zone
        body = render(
            request.template,
            request.data or {},
            locale,
            zone,
            overrides_dir=templates_dir(settings),
        )
    else:
        assert request.body is not None
        body = request.body
    draft_for = functools.partial(
        new_message,
        cipher,
        settings,
        principal,
        body=body,
        category=category,
        send_at=request.send_at,
        reference=request.reference,
        smart_encoding=request.smart_encoding,
    )
    draft = draft_for(recipient)
    # A number given directly has not been checked against STOP yet: the INSERT checks it,
    # which saves the busiest request a round trip. Rarely, it said STOP: then the message
    # is stored suppressed, as for a user's number.
    unless_opted_out = request.user_id is None
    if not await repository.add_one(
        session, draft.message, draft.event, unless_opted_out=unless_opted_out
    ):
        recipient = replace(recipient, suppression_reason="opted_out")
        draft = draft_for(recipient)
        await repository.add_one(session, draft.message, draft.event)
    count_entered(session, draft.message.status, [draft.message.category])
    return _accepted(cipher, draft, recipient)


async def send_test(
    session: AsyncSession,
    cipher: PhoneCipher,
    settings: Settings,
    principal: Principal,
    request: SelfTestRequest,
) -> MessageOut:
    """A test message to the caller's own number; admins may name another."""
    if request.to is not None:
        if not principal.is_admin:
            raise Forbidden("only admins may send a test to another number", code="missing_scope")
        recipient = _direct_recipient(settings, request.to, None, field="body.to")
    elif principal.kind != "user":
        raise Unprocessable("a service has no number of its own: give `to` (admins only)")
    else:
        recipient = await _own_number(session, cipher, settings, principal.id)
    if recipient.e164 and await optouts.is_opted_out(session, cipher.blind_index(recipient.e164)):
        raise RecipientOptedOut("this number replied STOP; it must reply START first")
    stored = await _store(
        session, cipher, settings, principal, recipient, body=request.body, category=Category.TEST
    )
    return _accepted(cipher, stored, recipient)


async def store_code_message(
    session: AsyncSession,
    cipher: PhoneCipher,
    settings: Settings,
    principal: Principal,
    user: User,
    e164: str,
    *,
    template_body: str,
) -> Message:
    """The outbox row of a one-time code. Its body is never stored: the worker makes the code
    and the body as it sends; `template_body` (with a filler code) gives the segment count."""
    recipient = Recipient(e164, user.phone_region, user)
    stored = await _store(
        session,
        cipher,
        settings,
        principal,
        recipient,
        body=template_body,
        category=Category.ONE_TIME_CODE,
        # A code late is a code dead: Twilio is told to drop it when the code expires.
        validity_seconds=settings.otp_ttl_seconds,
    )
    return stored.message


def templates_dir(settings: Settings) -> Path | None:
    return (
        Path(settings.notification_templates_dir) if settings.notification_templates_dir else None
    )


async def _own_number(
    session: AsyncSession, cipher: PhoneCipher, settings: Settings, external_id: str
) -> Recipient:
    user, _ = await users.get_or_create_user(session, external_id)
    if user.phone_encrypted is None:
        raise NoPhoneNumber("add a phone number to your profile first")
    if settings.sms_require_verified_phone and user.phone_verified_at is None:
        raise PhoneNotVerified("verify your phone number first")
    if settings.sms_allowed_countries and user.phone_region not in settings.sms_allowed_countries:
        raise CountryNotAllowed(f"SMS to {user.phone_region} numbers is not enabled")
    return Recipient(cipher.decrypt(user.phone_encrypted), user.phone_region, user)


async def user_recipients(
    session: AsyncSession,
    cipher: PhoneCipher,
    settings: Settings,
    recipients: Sequence[User],
    category: Category,
    *,
    check_preferences: bool = True,
) -> list[Recipient]:
    """Each user's number, or why it must not be used (recorded as a suppressed message), in
    a few queries whatever the number of users."""
    preferences = await get_many_preferences(session, [user.id for user in recipients])
    indexes = [user.phone_index for user in recipients if user.phone_index is not None]
    opted_out = await optouts.opted_out_among(session, indexes)
    found = []
    for user in recipients:
        if user.phone_encrypted is None:
            found.append(Recipient(None, None, user, "no_phone_number"))
            continue
        e164 = cipher.decrypt(user.phone_encrypted)
        reason = _reason_not_to_send(
            settings, user, preferences[user.id] if check_preferences else None, category
        )
        if reason is None and user.phone_index in opted_out:
            reason = "opted_out"
        found.append(Recipient(e164, user.phone_region, user, reason))
    return found


def _reason_not_to_send(
    settings: Settings, user: User, preferences: Preferences | None, category: Category
) -> str | None:
    if settings.sms_require_verified_phone and user.phone_verified_at is None:
        return "phone_not_verified"
    if settings.sms_allowed_countries and user.phone_region not in settings.sms_allowed_countries:
        return "country_not_allowed"
    if preferences is None:
        return None
    if not preferences.sms_enabled and category not in IGNORES_SMS_ENABLED:
        return "sms_disabled"
    key = PREFERENCE_KEY[category]
    if key is not None and not getattr(preferences, key):
        return "preference_off"
    return None


def _direct_recipient(
    settings: Settings, raw: str, country: str | None, *, field: str
) -> Recipient:
    """A number an authorised service gave: used as given, if it can take SMS where allowed."""
    try:
        check = normalize_sms_number(raw, country, settings.default_phone_region)
    except InvalidPhoneNumber as error:
        raise InvalidPhoneNumberError(error, field=field) from error
    if settings.sms_allowed_countries and check.region not in settings.sms_allowed_countries:
        raise CountryNotAllowed(f"SMS to {check.region} numbers is not enabled")
    return Recipient(check.e164, check.region)


async def _store(
    session: AsyncSession,
    cipher: PhoneCipher,
    settings: Settings,
    principal: Principal,
    recipient: Recipient,
    *,
    body: str,
    category: Category,
    send_at: datetime | None = None,
    reference: str | None = None,
    smart_encoding: bool = False,
    validity_seconds: int | None = None,
) -> Draft:
    draft = new_message(
        cipher,
        settings,
        principal,
        recipient,
        body=body,
        category=category,
        send_at=send_at,
        reference=reference,
        smart_encoding=smart_encoding,
        validity_seconds=validity_seconds,
    )
    await repository.add_one(session, draft.message, draft.event)
    count_entered(session, draft.message.status, [draft.message.category])
    return draft


@dataclass(frozen=True, slots=True)
class Draft:
    """A message with the event that records how it started: about to be stored, or stored."""

    message: Message
    event: MessageEvent


def new_message(
    cipher: PhoneCipher,
    settings: Settings,
    principal: Principal,
    recipient: Recipient,
    *,
    body: str,
    category: Category,
    send_at: datetime | None = None,
    reference: str | None = None,
    smart_encoding: bool = False,
    validity_seconds: int | None = None,
    expires_at: datetime | None = None,
    notification_id: uuid.UUID | None = None,
    body_field: str = "body.body",
) -> Draft:
    """The message as it will be stored, after every check of its body and time. Messages in
    a quiet-hours category that would arrive at night are scheduled for the morning."""
    final_body = encoding.smart_encode(body) if smart_encoding else body
    if not final_body.strip():  # e.g. only zero-width spaces, which smart encoding removes
        detail = "the body has no visible text"
        raise EmptyBody(detail, errors=[_field_error(body_field, detail, "empty")])
    if len(final_body) > encoding.MAX_BODY_CHARACTERS:
        detail = (
            f"the body has {len(final_body)} characters; at most "
            f"{encoding.MAX_BODY_CHARACTERS} fit in one SMS message"
        )
        raise BodyTooLong(detail, errors=[_field_error(body_field, detail, "too_long")])
    now = datetime.now(UTC)
    if send_at is not None and send_at - now > MAX_SCHEDULE_AHEAD:
        detail = f"`send_at` is at most {MAX_SCHEDULE_AHEAD.days} days ahead"
        raise Unprocessable(detail, errors=[_field_error("body.send_at", detail, "too_far")])
    due = send_at if send_at is not None and send_at > now else now
    event_detail = recipient.suppression_reason
    if category in HELD_CATEGORIES and recipient.e164 and not recipient.suppression_reason:
        zones = recipient_zones(
            recipient.user.time_zone if recipient.user else None, recipient.e164
        )
        morning = quiet_until(due, zones, settings.quiet_hours_start, settings.quiet_hours_end)
        if morning is not None:
            send_at = due = morning
            event_detail = "held for the recipient's quiet hours"
    status = Status.SCHEDULED if due > now else Status.QUEUED
    if recipient.suppression_reason:
        status = Status.SUPPRESSED
    if expires_at is None:
        expires_at = due + timedelta(seconds=validity_seconds or settings.message_validity_seconds)
    shape = encoding.shape(final_body)
    message = Message(
        id=uuid.uuid4(),
        user_id=recipient.user.id if recipient.user else None,
        to_encrypted=cipher.encrypt(recipient.e164) if recipient.e164 else None,
        to_index=cipher.blind_index(recipient.e164) if recipient.e164 else None,
        to_region=recipient.region,
        body=None if category in BODY_NOT_STORED else final_body,
        category=category,
        status=status,
        suppression_reason=recipient.suppression_reason,
        encoding=shape.encoding,
        segments=shape.segments,
        reference=reference,
        requested_by=principal_ref(principal),
        send_at=send_at,
        next_attempt_at=due,
        expires_at=expires_at,
        final_at=now if status is Status.SUPPRESSED else None,
        notification_id=notification_id,
    )
    event = MessageEvent(message_id=message.id, status=status, source="api", detail=event_detail)
    return Draft(message, event)


async def store_many(session: AsyncSession, drafts: Sequence[Draft]) -> list[Message]:
    return [stored.message for stored in await store_drafts(session, drafts)]


async def store_drafts(session: AsyncSession, drafts: Sequence[Draft]) -> list[Draft]:
    """The drafts as stored (server defaults and times filled in), in the same order."""
    messages, events = await repository.add_many(
        session, [draft.message for draft in drafts], [draft.event for draft in drafts]
    )
    for message in messages:  # accepted as queued, scheduled or suppressed
        count_entered(session, message.status, [message.category])
    return [Draft(message, event) for message, event in zip(messages, events, strict=True)]


def _accepted(cipher: PhoneCipher, stored: Draft, recipient: Recipient) -> MessageOut:
    """The answer to a message just stored, from what the INSERTs returned: its history is
    its first event, its owner the recipient (no query for either)."""
    owner = recipient.user.external_id if recipient.user else None
    return _out(cipher, stored.message, owner, [stored.event])


def _field_error(field: str, message: str, kind: str) -> FieldError:
    return FieldError(field=field, message=message, type=kind)


async def describe(session: AsyncSession, cipher: PhoneCipher, message: Message) -> MessageOut:
    owner = await users.external_id_of(session, message.user_id) if message.user_id else None
    events = (await repository.history(session, [message.id])).get(message.id, [])
    return _out(cipher, message, owner, events)


def _out(
    cipher: PhoneCipher, message: Message, owner: str | None, events: list[MessageEvent]
) -> MessageOut:
    return MessageOut(
        id=message.id,
        status=Status(message.status),
        twilio_status=message.twilio_status,
        twilio_sid=message.twilio_sid,
        to=mask_phone(cipher.decrypt(message.to_encrypted)) if message.to_encrypted else None,
        user_id=owner,
        category=Category(message.category),
        body=message.body,
        encoding=message.encoding,
        segments=message.segments,
        price=message.price,
        price_unit=message.price_unit,
        error_code=message.error_code,
        error_message=message.error_message,
        suppression_reason=message.suppression_reason,
        reference=message.reference,
        requested_by=message.requested_by,
        send_at=message.send_at,
        attempts=message.attempts,
        created_at=message.created_at,
        updated_at=message.updated_at,
        final_at=message.final_at,
        history=[
            StatusChange(
                status=Status(event.status),
                twilio_status=event.twilio_status,
                error_code=event.error_code,
                source=event.source,
                at=event.created_at,
            )
            for event in events
        ],
    )


async def _visible(
    session: AsyncSession, principal: Principal, message: Message, owner: str | None
) -> bool:
    if principal.can(Scope.SMS_READ) or message.requested_by == principal_ref(principal):
        return True
    return principal.kind == "user" and owner == principal.id


async def get_message(
    session: AsyncSession, cipher: PhoneCipher, principal: Principal, message_id: uuid.UUID
) -> MessageOut:
    found = await repository.get(session, message_id)
    # Someone else's message is "not found": its existence is not the caller's business.
    if found is None or not await _visible(session, principal, *found):
        raise MessageNotFound(f"no message {message_id}")
    message, owner = found
    events = (await repository.history(session, [message.id])).get(message.id, [])
    return _out(cipher, message, owner, events)


async def audit(session: AsyncSession, principal: Principal, message_id: uuid.UUID) -> MessageAudit:
    """Who asked for the message and each change of its status; visible to whom the message
    is (`get_message`)."""
    found = await repository.get_with_requester(session, message_id)
    if found is None or not await _visible(session, principal, found[0], found[1]):
        raise MessageNotFound(f"no message {message_id}")
    message, _, key_name = found
    events = (await repository.history(session, [message.id])).get(message.id, [])
    return MessageAudit(
        message_id=message.id,
        requested_by=message.requested_by,
        api_key_name=key_name,
        created_at=message.created_at,
        events=[
            AuditEvent(
                status=Status(event.status),
                twilio_status=event.twilio_status,
                error_code=event.error_code,
                error_meaning=meaning_of(event.error_code),
                source=event.source,
                detail=event.detail,
                at=event.created_at,
            )
            for event in events
        ],
    )


async def list_messages(
    session: AsyncSession,
    cipher: PhoneCipher,
    principal: Principal,
    where: MessageFilter,
    *,
    cursor: str | None,
    limit: int,
) -> MessagePage:
    if not principal.can(Scope.SMS_READ):
        if principal.kind == "user":  # a user sees the messages sent to them
            user = await users.find_user(session, principal.id)
            # Asking for another user's messages finds none, rather than one's own.
            if user is None or where.user_id not in (None, user.id):
                return MessagePage(messages=[], next_cursor=None)
            where = replace(where, user_id=user.id)
        else:  # a service without sms:read sees what it sent
            where = replace(where, requested_by=principal_ref(principal))
    rows = await repository.page(session, where, before=_decode_cursor(cursor), limit=limit + 1)
    shown = rows[:limit]
    events = await repository.history(session, [message.id for message, _ in shown])
    messages = [
        _out(cipher, message, owner, events.get(message.id, [])) for message, owner in shown
    ]
    last = shown[-1][0] if len(rows) > limit else None
    return MessagePage(messages=messages, next_cursor=_encode_cursor(last) if last else None)


def _encode_cursor(message: Message) -> str:
    raw = f"{message.created_at.isoformat()}|{message.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    if cursor is None:
        return None
    try:
        created_at, _, message_id = base64.urlsafe_b64decode(cursor).decode().partition("|")
        after = datetime.fromisoformat(created_at)
        if after.tzinfo is None:  # ours always carry their zone
            raise ValueError("a cursor's time has a zone")
        plausible_moment(after)
        return after, uuid.UUID(message_id)
    except (ValueError, binascii.Error, UnicodeDecodeError) as error:
        raise Unprocessable("`cursor` is not one this API gave out") from error


async def cancel(
    session: AsyncSession, cipher: PhoneCipher, principal: Principal, message_id: uuid.UUID
) -> MessageOut:
    found = await repository.get(session, message_id)
    if found is None or not await _visible(session, principal, *found):
        raise MessageNotFound(f"no message {message_id}")
    if not (principal.can(Scope.SMS_SEND) or found[0].requested_by == principal_ref(principal)):
        raise Forbidden("cancelling needs the `sms:send` scope or to have sent it")
    cancelled = await repository.cancel(session, message_id)
    if cancelled is None:
        raise NotCancellable(
            f"the message is {found[0].status}: only messages not yet handed to Twilio can be "
            "cancelled"
        )
    await repository.add_events(session, [message_id], Status.CANCELLED, source="api")
    count_entered(session, Status.CANCELLED, [cancelled.category])
    return await describe(session, cipher, cancelled)
