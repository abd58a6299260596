from __future__ import annotations

from app.core.errors import Conflict, NotFound, Unprocessable


class BookingNotFound(NotFound):
    code = "booking_not_found"


class BookingConfirmationNotFound(NotFound):
    code = "booking_confirmation_not_found"


class BookingConfirmationExpired(Conflict):
    code, title = "booking_confirmation_expired", "Booking confirmation expired"


class BookingCancelled(Conflict):
    code, title = "booking_cancelled", "Booking cancelled"


class BookingStarted(Conflict):
    code, title = "booking_started", "Booking already started"


class RemindersTooFarAhead(Unprocessable):
    code, title = "reminders_too_far_ahead", "Reminders too far ahead"
