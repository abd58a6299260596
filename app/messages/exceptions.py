from __future__ import annotations

from app.core.errors import Conflict, NotFound, Unprocessable


class MessageNotFound(NotFound):
    code = "message_not_found"


class BodyTooLong(Unprocessable):
    code, title = "body_too_long", "Body too long"


class EmptyBody(Unprocessable):
    code, title = "empty_body", "Empty body"


class CountryNotAllowed(Unprocessable):
    code, title = "country_not_allowed", "Country not allowed"


class NoPhoneNumber(Unprocessable):
    code, title = "no_phone_number", "No phone number"


class PhoneNotVerified(Unprocessable):
    code, title = "phone_not_verified", "Phone number not verified"


class RecipientOptedOut(Unprocessable):
    code, title = "recipient_opted_out", "Recipient opted out"


class NotCancellable(Conflict):
    code, title = "not_cancellable", "Message cannot be cancelled"
