from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Response, status

from app.auth.dependencies import scope_checker
from app.auth.principal import Principal, Scope
from app.bookings import service
from app.bookings.schemas import BookingId, BookingReminders, BookingRequest, RemindersRequest
from app.core.deps import PhoneCipherDep, RedisDep, SessionDep, SettingsDep
from app.core.errors import problem_responses
from app.idempotency.dependencies import IdempotencyDep
from app.notifications.router import enqueue_after_response
from app.notifications.schemas import NotifyResult
from app.outbox.queue import enqueue_pending

router = APIRouter(
    prefix="/api", tags=["bookings"], responses=problem_responses(400, 401, 403, 422)
)

Sender = Annotated[Principal, Depends(scope_checker(Scope.SMS_SEND))]
BookingPath = Annotated[BookingId, Path(description="The booking system's id of the booking.")]


@router.put(
    "/sms/bookings/{booking_id}/reminders",
    response_model=BookingReminders,
    summary="Schedule a booking's reminders, or move them",
    description="Schedules a reminder `offsets_minutes` before `starts_at` (default 24 h and "
    "1 h) to the customer. A second PUT replaces the reminders not yet sent (a moved booking "
    "gets reminders at its new times only). A reminder whose time has passed is skipped, and "
    "one a quarter of its lead time late expires: never sent late. The customer's reminder "
    "preference is the one they have when it is sent.",
    responses=problem_responses(404),
)
async def schedule_reminders(
    booking_id: BookingPath,
    body: RemindersRequest,
    principal: Sender,
    session: SessionDep,
    cipher: PhoneCipherDep,
    settings: SettingsDep,
    redis: RedisDep,
    background: BackgroundTasks,
) -> BookingReminders:
    reminders, to_enqueue = await service.schedule_reminders(
        session, cipher, settings, principal, booking_id, body
    )
    if to_enqueue:
        background.add_task(enqueue_pending, redis, to_enqueue)
    return reminders


@router.get(
    "/sms/bookings/{booking_id}/reminders",
    response_model=BookingReminders,
    summary="A booking's reminders and their status",
    responses=problem_responses(404),
)
async def get_reminders(
    booking_id: BookingPath, principal: Sender, session: SessionDep
) -> BookingReminders:
    return await service.get_reminders(session, booking_id)


@router.delete(
    "/sms/bookings/{booking_id}/reminders",
    response_model=BookingReminders,
    summary="Cancel a booking's reminders not yet sent",
    description="A `booking.cancelled` notification with the booking id as `reference` does "
    "the same.",
    responses=problem_responses(404),
)
async def cancel_reminders(
    booking_id: BookingPath, principal: Sender, session: SessionDep
) -> BookingReminders:
    return await service.cancel_reminders(session, booking_id)


@router.post(
    "/sms/resend-booking-confirmation",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=NotifyResult,
    summary="Send a booking's confirmation again",
    description="Renders the last `booking.confirmed` notification sent with this booking id as "
    "`reference` again for its recipients, in their current language, to their current "
    "number. 404 `booking_confirmation_not_found` when none was sent.",
    responses=problem_responses(404, 409, 413),
)
async def resend_booking_confirmation(
    body: BookingRequest,
    principal: Sender,
    idempotency: IdempotencyDep,
    session: SessionDep,
    cipher: PhoneCipherDep,
    settings: SettingsDep,
    redis: RedisDep,
    background: BackgroundTasks,
) -> NotifyResult | Response:
    if (replay := await idempotency.begin("resend-booking-confirmation", body)) is not None:
        return replay
    delivery = await service.resend_confirmation(
        session, cipher, settings, principal, body.booking_id
    )
    await idempotency.complete(session, status.HTTP_202_ACCEPTED, delivery.result)
    enqueue_after_response(background, redis, delivery)
    return delivery.result


@router.post(
    "/sms/send-booking-reminder",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=NotifyResult,
    summary="Send a booking's reminder now",
    description="To the customer of a booking whose reminders were scheduled (PUT "
    "`/api/sms/bookings/{booking_id}/reminders`): 404 for an unknown booking, 409 "
    "`booking_cancelled` or `booking_started`.",
    responses=problem_responses(404, 409, 413),
)
async def send_booking_reminder(
    body: BookingRequest,
    principal: Sender,
    idempotency: IdempotencyDep,
    session: SessionDep,
    cipher: PhoneCipherDep,
    settings: SettingsDep,
    redis: RedisDep,
    background: BackgroundTasks,
) -> NotifyResult | Response:
    if (replay := await idempotency.begin("send-booking-reminder", body)) is not None:
        return replay
    delivery = await service.send_reminder_now(
        session, cipher, settings, principal, body.booking_id
    )
    await idempotency.complete(session, status.HTTP_202_ACCEPTED, delivery.result)
    enqueue_after_response(background, redis, delivery)
    return delivery.result
