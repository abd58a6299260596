"""A booking's reminders: scheduled as messages, moved and cancelled with the booking."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.bookings import repository
from app.bookings.exceptions import (
    BookingCancelled,
    BookingConfirmationExpired,
    BookingConfirmationNotFound,
    BookingNotFound,
    BookingStarted,
    RemindersTooFarAhead,
)
from app.bookings.models import Booking
from app.bookings.reminders import GENERIC_EVENT, REMINDER_EVENTS, event_for, late_tolerance
from app.bookings.schemas import BookingReminders, Reminder, RemindersRequest
from app.core.crypto import PhoneCipher
from app.core.errors import FieldError
from app.core.settings import Settings
from app.messages.models import Message
from app.messages.service import MAX_SCHEDULE_AHEAD, principal_ref
from app.messages.status import Status
from app.notifications import repository as notifications_repository
from app.notifications.service import Delivery, cancel_booking_reminders, deliver
from app.outbox.queue import Pending
from app.users import service as users

CONFIRMATION_EVENT = "booking.confirmed"


async def schedule_reminders(
    session: AsyncSession,
    cipher: PhoneCipher,
    settings: Settings,
    principal: Principal,
    booking_id: str,
    request: RemindersRequest,
) -> tuple[BookingReminders, list[Pending]]:
    """Schedules the booking's reminders, replacing those of an earlier start not yet sent.
    Those whose time has passed are skipped: a reminder is never sent late."""
    customer = await users.get_user(session, request.user_id)
    now = datetime.now(UTC)
    last = request.starts_at - timedelta(minutes=min(request.offsets_minutes))
    if last - now > MAX_SCHEDULE_AHEAD:
        # Said here, of the field the caller sent: the messages would name their `send_at`.
        detail = (
            f"reminders are scheduled at most {MAX_SCHEDULE_AHEAD.days} days ahead; the last "
            f"one would go at {last.isoformat()}"
        )
        error = FieldError(field="body.starts_at", message=detail, type="too_far")
        raise RemindersTooFarAhead(detail, errors=[error])
    booking = await repository.upsert(
        session,
        booking_id=booking_id,
        user_id=customer.id,
        starts_at=request.starts_at,
        details={"service_name": request.service_name, "provider_name": request.provider_name},
        offsets=request.offsets_minutes,
        requested_by=principal_ref(principal),
    )
    await cancel_booking_reminders(session, booking_id, "booking rescheduled")
    to_enqueue: list[Pending] = []
    for offset in booking.reminder_offsets_minutes:
        send_at = booking.starts_at - timedelta(minutes=offset)
        if send_at <= now:
            continue
        delivery = await deliver(
            session,
            cipher,
            settings,
            principal,
            event=event_for(offset),
            data=_reminder_data(booking),
            recipients=[customer],
            send_at=send_at,
            reference=booking_id,
            expires_at=send_at + late_tolerance(offset),
            # A reminder turned off now may be on again by then, and the other way round:
            # the preference is the one the customer has when it goes.
            preferences_at_send_time=True,
        )
        to_enqueue += delivery.to_enqueue
    return await describe(session, booking, customer.external_id), to_enqueue


async def cancel_reminders(session: AsyncSession, booking_id: str) -> BookingReminders:
    booking = await _booking(session, booking_id, for_update=True)
    await cancel_booking_reminders(session, booking_id, "reminders cancelled")
    await repository.mark_cancelled(session, booking_id)
    owner = await users.external_id_of(session, booking.user_id)
    await session.refresh(booking)
    return await describe(session, booking, owner or "")


async def get_reminders(session: AsyncSession, booking_id: str) -> BookingReminders:
    booking = await _booking(session, booking_id)
    owner = await users.external_id_of(session, booking.user_id)
    return await describe(session, booking, owner or "")


async def send_reminder_now(
    session: AsyncSession,
    cipher: PhoneCipher,
    settings: Settings,
    principal: Principal,
    booking_id: str,
) -> Delivery:
    booking = await _booking(session, booking_id)
    if booking.cancelled_at is not None:
        raise BookingCancelled(f"booking {booking_id} was cancelled")
    if booking.starts_at <= datetime.now(UTC):
        raise BookingStarted(f"booking {booking_id} has already started")
    return await deliver(
        session,
        cipher,
        settings,
        principal,
        event=GENERIC_EVENT,
        data=_reminder_data(booking),
        recipients=await users.users_by_id(session, [booking.user_id]),
        reference=booking_id,
        expires_at=booking.starts_at,
    )


async def resend_confirmation(
    session: AsyncSession,
    cipher: PhoneCipher,
    settings: Settings,
    principal: Principal,
    booking_id: str,
) -> Delivery:
    """The booking's last confirmation again, to whom it was for, rendered anew in each one's
    current language (their number, preferences and STOP as they are now)."""
    original = await notifications_repository.latest(
        session, reference=booking_id, event=CONFIRMATION_EVENT
    )
    if original is None:
        raise BookingConfirmationNotFound(
            f"no `booking.confirmed` notification with reference {booking_id!r} was sent"
        )
    retention = timedelta(days=settings.message_body_retention_days)
    if not original.data or original.created_at < datetime.now(UTC) - retention:
        # Its data renders bodies: it is erased with them (retention), whether or not the
        # daily job has come round yet.
        raise BookingConfirmationExpired(
            f"the data of booking {booking_id!r}'s `booking.confirmed` notification was erased "
            f"(kept {settings.message_body_retention_days} days, and erased with a recipient "
            "who was erased): send it again with POST /api/sms/notify"
        )
    recipient_ids = await notifications_repository.recipient_ids(session, original.id)
    return await deliver(
        session,
        cipher,
        settings,
        principal,
        event=CONFIRMATION_EVENT,
        data=original.data,
        recipients=await users.users_by_id(session, recipient_ids),
        reference=booking_id,
    )


async def _booking(session: AsyncSession, booking_id: str, *, for_update: bool = False) -> Booking:
    booking = await repository.get(session, booking_id, for_update=for_update)
    if booking is None:
        raise BookingNotFound(f"no reminders were scheduled for booking {booking_id!r}")
    return booking


def _reminder_data(booking: Booking) -> dict[str, str]:
    return {**booking.details, "starts_at": booking.starts_at.isoformat()}


async def describe(session: AsyncSession, booking: Booking, customer: str) -> BookingReminders:
    """The reminders of the booking's current start: scheduled, skipped, sent or cancelled."""
    by_time: dict[datetime, tuple[str, Message]] = {}
    for event, message in await repository.reminder_messages(
        session, booking.booking_id, REMINDER_EVENTS
    ):
        if message.send_at is None:
            continue
        kept = by_time.get(message.send_at)
        # A reminder moved away and back has a cancelled twin: the live one is the answer.
        if kept is None or kept[1].status == Status.CANCELLED:
            by_time[message.send_at] = (event, message)
    reminders = []
    for offset in booking.reminder_offsets_minutes:
        send_at = booking.starts_at - timedelta(minutes=offset)
        scheduled = by_time.get(send_at)
        current = scheduled[1] if scheduled else None
        reminders.append(
            Reminder(
                offset_minutes=offset,
                event=event_for(offset),
                send_at=send_at,
                message_id=current.id if current else None,
                status=Status(current.status) if current else None,
                suppression_reason=current.suppression_reason if current else None,
                skipped=None if current else "in_the_past",
            )
        )
    return BookingReminders(
        booking_id=booking.booking_id,
        user_id=customer,
        starts_at=booking.starts_at,
        cancelled=booking.cancelled_at is not None,
        reminders=reminders,
    )
