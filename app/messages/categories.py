"""Message categories and the preference each one answers to."""

from __future__ import annotations

from enum import StrEnum


class Category(StrEnum):
    TRANSACTIONAL = "transactional"
    BOOKING_CONFIRMATION = "booking_confirmation"
    BOOKING_REMINDER = "booking_reminder"
    STATUS_UPDATE = "status_update"
    PAYMENT = "payment"
    TICKET = "ticket"
    SECURITY = "security"
    ONE_TIME_CODE = "one_time_code"
    MARKETING = "marketing"
    TEST = "test"


# The preference key that must be on, besides `sms_enabled`; None: `sms_enabled` alone.
PREFERENCE_KEY: dict[Category, str | None] = {
    Category.TRANSACTIONAL: None,
    Category.BOOKING_CONFIRMATION: "booking_confirmations",
    Category.BOOKING_REMINDER: "booking_reminders",
    Category.STATUS_UPDATE: "status_updates",
    Category.PAYMENT: "payment_confirmations",
    Category.TICKET: "ticket_updates",
    Category.SECURITY: None,
    Category.ONE_TIME_CODE: None,
    Category.MARKETING: "marketing",
    Category.TEST: None,
}

# Sent even with `sms_enabled` off: the user asked for them or must know (SPEC §6).
IGNORES_SMS_ENABLED = frozenset({Category.SECURITY, Category.ONE_TIME_CODE})
# Bodies never stored: they carry one-time codes.
BODY_NOT_STORED = frozenset({Category.ONE_TIME_CODE})
