"""Sending an event: recipients (users, a topic), each one's language, one message each."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.bookings import repository as bookings_repository
from app.bookings.reminders import REMINDER_EVENTS
from app.core.crypto import PhoneCipher
from app.core.settings import Settings
from app.messages.service import (
    new_message,
    principal_ref,
    store_many,
    templates_dir,
    user_recipients,
)
from app.messages.status import Status
from app.notifications import repository
from app.notifications.catalogue import EVENTS
from app.notifications.exceptions import TooManyRecipients
from app.notifications.localisation import recipient_locale_and_zone
from app.notifications.models import Notification
from app.notifications.rendering import check_data, render
from app.notifications.schemas import (
    MAX_RECIPIENTS,
    NotifyRequest,
    NotifyResult,
    Queued,
    Skipped,
    SkipReason,
)
from app.outbox.queue import Pending
from app.topics import service as topics
from app.users import service as users
from app.users.models import User


@dataclass(frozen=True, slots=True)
class Delivery:
    """What `deliver` did: the answer, and the messages to put on the queue after the commit."""

    result: NotifyResult
    to_enqueue: list[Pending]


async def notify(
    session: AsyncSession,
    cipher: PhoneCipher,
    settings: Settings,
    principal: Principal,
    request: NotifyRequest,
) -> Delivery:
    named = list(dict.fromkeys(request.recipients.user_ids))
    found = await users.find_users(session, named)
    recipients = [found[external_id] for external_id in named if external_id in found]
    if request.recipients.topic is not None:
        recipients += await topics.subscriber_users(
            session, request.recipients.topic, limit=MAX_RECIPIENTS + 1
        )
    recipients = list({user.id: user for user in recipients}.values())  # once each
    if len(recipients) > MAX_RECIPIENTS:
        raise TooManyRecipients(
            f"at most {MAX_RECIPIENTS} recipients per notification; use /api/sms/bulk-send"
        )
    cancelled: list[uuid.UUID] = []
    if request.event == "booking.cancelled" and request.reference is not None:
        cancelled = await cancel_booking_reminders(session, request.reference, "booking cancelled")
        await bookings_repository.mark_cancelled(session, request.reference)
    delivery = await deliver(
        session,
        cipher,
        settings,
        principal,
        event=request.event,
        data=request.data,
        recipients=recipients,
        unknown=[external_id for external_id in named if external_id not in found],
        send_at=request.send_at,
        reference=request.reference,
    )
    delivery.result.cancelled_reminders = cancelled
    return delivery


async def cancel_booking_reminders(
    session: AsyncSession, booking_id: str, detail: str
) -> list[uuid.UUID]:
    return await repository.cancel_pending(
        session, reference=booking_id, events=REMINDER_EVENTS, detail=detail
    )


async def deliver(
    session: AsyncSession,
    cipher: PhoneCipher,
    settings: Settings,
    principal: Principal,
    *,
    event: str,
    data: Mapping[str, Any],
    recipients: Sequence[User],
    unknown: Sequence[str] = (),
    send_at: datetime | None = None,
    reference: str | None = None,
    expires_at: datetime | None = None,
    preferences_at_send_time: bool = False,
) -> Delivery:
    """Renders `event` for each recipient in their locale and zone and stores one message each
    (suppressed, with the reason, for those who must not get it). Nothing is stored if any
    rendering fails: every recipient's text is made before the first row is written.
    `preferences_at_send_time`: preferences are left to the worker's check as it sends."""
    spec = EVENTS[event]
    notification = Notification(
        id=uuid.uuid4(),
        event=event,
        data=dict(data),
        reference=reference,
        requested_by=principal_ref(principal),
        # Python's clock, not the transaction's: "the latest" must tell apart two in one.
        created_at=datetime.now(UTC),
    )
    checked = await user_recipients(
        session,
        cipher,
        settings,
        recipients,
        spec.category,
        check_preferences=not preferences_at_send_time,
    )
    if not checked:  # nobody to render it for (unknown users, an empty topic): check it anyway
        check_data(event, data, overrides_dir=templates_dir(settings))
    texts: dict[tuple[str, str], str] = {}  # a team shares a few (locale, zone) pairs
    drafts = []
    for recipient in checked:
        where = recipient_locale_and_zone(recipient.user, recipient.e164)
        if where not in texts:
            texts[where] = render(event, data, *where, overrides_dir=templates_dir(settings))
        drafts.append(
            new_message(
                cipher,
                settings,
                principal,
                recipient,
                body=texts[where],
                category=spec.category,
                send_at=send_at,
                reference=reference,
                expires_at=expires_at,
                notification_id=notification.id,
                body_field="body.data",
            )
        )
    await repository.add(session, notification)
    messages = await store_many(session, drafts)
    queued, skipped, to_enqueue = [], [], []
    for recipient, message in zip(checked, messages, strict=True):
        assert recipient.user is not None
        if recipient.suppression_reason:
            skipped.append(
                Skipped(
                    user_id=recipient.user.external_id,
                    reason=cast(SkipReason, recipient.suppression_reason),
                    message_id=message.id,
                )
            )
            continue
        queued.append(
            Queued(
                user_id=recipient.user.external_id,
                message_id=message.id,
                status=Status(message.status),
            )
        )
        if message.status in (Status.QUEUED, Status.SCHEDULED):
            to_enqueue.append((message.id, message.send_at))
    skipped += [Skipped(user_id=name, reason="unknown_user", message_id=None) for name in unknown]
    result = NotifyResult(
        notification_id=notification.id, event=event, queued=queued, skipped=skipped
    )
    return Delivery(result, to_enqueue)
