"""The notification events: each one's category, preference key and the data it needs."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from app.messages.categories import PREFERENCE_KEY, Category


class FieldKind(StrEnum):
    TEXT = "text"  # shown as given
    LABEL = "label"  # a machine value (a status, a severity) shown through the locale's labels
    DATETIME = "datetime"  # ISO 8601 with a zone; shown in the recipient's zone and locale
    MONEY = "money"  # an amount; its currency is the event's `currency` field
    COUNT = "count"  # a non-negative integer; selects a plural form


@dataclass(frozen=True, slots=True)
class DataField:
    name: str
    kind: FieldKind = FieldKind.TEXT
    # LABEL: which `[labels.<set>]` table of the locale file translates the value.
    labels: str | None = None


@dataclass(frozen=True, slots=True)
class EventSpec:
    name: str
    category: Category
    fields: tuple[DataField, ...]

    @property
    def preference_key(self) -> str | None:
        """The preference that must be on (besides `sms_enabled`); None: none besides it."""
        return PREFERENCE_KEY[self.category]

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(item.name for item in self.fields)


def _text(*names: str) -> tuple[DataField, ...]:
    return tuple(DataField(name) for name in names)


_STARTS_AT = DataField("starts_at", FieldKind.DATETIME)
_SEATS = DataField("seats", FieldKind.COUNT)
_AMOUNT = DataField("amount", FieldKind.MONEY)
_CURRENCY = DataField("currency")
_MINUTES = DataField("expires_in_minutes", FieldKind.COUNT)
_SEVERITY = DataField("severity", FieldKind.LABEL, labels="severity")

EVENTS: dict[str, EventSpec] = {
    spec.name: spec
    for spec in (
        EventSpec(
            "booking.confirmed",
            Category.BOOKING_CONFIRMATION,
            (
                *_text("customer_name", "service_name", "provider_name"),
                _STARTS_AT,
                _SEATS,
                DataField("booking_reference"),
            ),
        ),
        EventSpec(
            "booking.provider_new",
            Category.BOOKING_CONFIRMATION,
            (*_text("provider_name", "customer_name", "service_name"), _STARTS_AT, _SEATS),
        ),
        EventSpec(
            "booking.status_changed",
            Category.STATUS_UPDATE,
            (
                *_text("service_name"),
                _STARTS_AT,
                DataField("old_status", FieldKind.LABEL, labels="booking_status"),
                DataField("new_status", FieldKind.LABEL, labels="booking_status"),
            ),
        ),
        EventSpec(
            "booking.cancelled",
            Category.STATUS_UPDATE,
            (*_text("service_name", "provider_name"), _STARTS_AT),
        ),
        EventSpec(
            "booking.reminder_24h",
            Category.BOOKING_REMINDER,
            (*_text("service_name", "provider_name"), _STARTS_AT),
        ),
        EventSpec(
            "booking.reminder_1h",
            Category.BOOKING_REMINDER,
            (*_text("service_name", "provider_name"), _STARTS_AT),
        ),
        # Any other reminder offset (a reminder 3 days or 30 minutes ahead): the date says when.
        EventSpec(
            "booking.reminder",
            Category.BOOKING_REMINDER,
            (*_text("service_name", "provider_name"), _STARTS_AT),
        ),
        EventSpec(
            "payment.succeeded",
            Category.PAYMENT,
            (_AMOUNT, _CURRENCY, *_text("service_name", "booking_reference")),
        ),
        EventSpec(
            "payment.failed",
            Category.PAYMENT,
            (_AMOUNT, _CURRENCY, *_text("service_name", "link")),
        ),
        EventSpec(
            "refund.processed",
            Category.PAYMENT,
            (_AMOUNT, _CURRENCY, *_text("service_name")),
        ),
        EventSpec(
            "ticket.created",
            Category.TICKET,
            (
                DataField("title"),
                _SEVERITY,
                DataField("category", FieldKind.LABEL, labels="ticket_category"),
                DataField("created_by"),
                DataField("link"),
            ),
        ),
        EventSpec(
            "ticket.status_changed",
            Category.TICKET,
            (
                DataField("title"),
                DataField("old_status", FieldKind.LABEL, labels="ticket_status"),
                DataField("new_status", FieldKind.LABEL, labels="ticket_status"),
                _SEVERITY,
                DataField("link"),
            ),
        ),
        EventSpec(
            "security.alert",
            Category.SECURITY,
            (DataField("description"), DataField("occurred_at", FieldKind.DATETIME)),
        ),
        EventSpec(
            "phone.verification_code",
            Category.ONE_TIME_CODE,
            (DataField("code"), _MINUTES),
        ),
        EventSpec(
            "auth.two_factor_code",
            Category.ONE_TIME_CODE,
            (DataField("code"), _MINUTES),
        ),
    )
}


def get_event(name: str) -> EventSpec | None:
    return EVENTS.get(name)
