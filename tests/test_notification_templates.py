"""Notification templates: every event in en, fr and es, plurals, zones, money, overrides."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from app.messages.categories import PREFERENCE_KEY, Category
from app.messages.exceptions import BodyTooLong
from app.notifications.catalogue import EVENTS
from app.notifications.rendering import (
    InvalidTemplateData,
    MissingTemplateData,
    builtin_locales,
    render,
    resolve_locale,
)

NNBSP = "\u202f"  # CLDR's narrow no-break space (English time, French thousands)
NBSP = "\xa0"

BOOKING: dict[str, Any] = {
    "customer_name": "Ana",
    "provider_name": "Dr Martin",
    "service_name": "Dental check-up",
    "starts_at": "2025-06-01T12:30:00Z",
    "seats": 1,
    "booking_reference": "BK-1042",
}
PAYMENT: dict[str, Any] = {
    "amount": "1234.5",
    "currency": "EUR",
    "service_name": "Dental check-up",
    "booking_reference": "BK-1042",
    "link": "https://example.com/pay/BK-1042",
}
TICKET: dict[str, Any] = {
    "title": "Database Connection Issue",
    "severity": "high",
    "category": "technical",
    "created_by": "John Doe",
    "link": "https://example.com/tickets/7",
    "old_status": "open",
    "new_status": "resolved",
}
SAMPLE: dict[str, dict[str, Any]] = {
    "booking.confirmed": BOOKING,
    "booking.provider_new": BOOKING,
    "booking.status_changed": {**BOOKING, "old_status": "pending", "new_status": "confirmed"},
    "booking.cancelled": BOOKING,
    "booking.reminder_24h": BOOKING,
    "booking.reminder_1h": BOOKING,
    "payment.succeeded": PAYMENT,
    "payment.failed": PAYMENT,
    "refund.processed": PAYMENT,
    "ticket.created": TICKET,
    "ticket.status_changed": TICKET,
    "security.alert": {
        "description": "new sign-in from Chrome on Windows",
        "occurred_at": "2025-06-01T12:30:00Z",
    },
    "phone.verification_code": {"code": "482913", "expires_in_minutes": 10},
    "auth.two_factor_code": {"code": "482913", "expires_in_minutes": 10},
}

# A key fragment of each event's text per locale (besides the data it carries).
FRAGMENTS: dict[str, dict[str, str]] = {
    "booking.confirmed": {
        "en": "is confirmed (1 seat)",
        "fr": "est confirmée (1 place)",
        "es": "está confirmada (1 plaza)",
    },
    "booking.provider_new": {
        "en": "New booking, Dr Martin: Ana booked",
        "fr": "Nouvelle réservation, Dr Martin : Ana a réservé",
        "es": "Nueva reserva, Dr Martin: Ana reservó",
    },
    "booking.status_changed": {
        "en": "changed: pending → confirmed",
        "fr": "a changé : en attente → confirmée",
        "es": "cambió: pendiente → confirmada",
    },
    "booking.cancelled": {
        "en": "has been cancelled",
        "fr": "a été annulée",
        "es": "ha sido cancelada",
    },
    "booking.reminder_24h": {
        "en": "Reminder: Dental check-up with Dr Martin tomorrow",
        "fr": "Rappel : Dental check-up avec Dr Martin demain",
        "es": "Recordatorio: Dental check-up con Dr Martin mañana",
    },
    "booking.reminder_1h": {
        "en": "starts in 1 hour",
        "fr": "commence dans 1 heure",
        "es": "empieza en 1 hora",
    },
    "payment.succeeded": {
        "en": "Payment of €1,234.50 received",
        "fr": f"Paiement de 1{NNBSP}234,50{NBSP}€ reçu",
        "es": f"Pago de 1.234,50{NBSP}€ recibido",
    },
    "payment.failed": {
        "en": "failed. Please update your payment method: https://example.com/pay",
        "fr": "a échoué",
        "es": "ha fallado",
    },
    "refund.processed": {
        "en": "Your refund of €1,234.50",
        "fr": "remboursement de 1",
        "es": "Tu reembolso de 1.234,50",
    },
    "ticket.created": {
        "en": "Severity: High\nCategory: Technical\nCreated by: John Doe",
        "fr": "Gravité : Élevée\nCatégorie : Technique\nCréé par : John Doe",
        "es": "Gravedad: Alta\nCategoría: Técnica\nCreado por: John Doe",
    },
    "ticket.status_changed": {
        "en": "Status: Open → Resolved\nSeverity: High",
        "fr": "Statut : Ouvert → Résolu\nGravité : Élevée",
        "es": "Estado: Abierto → Resuelto\nGravedad: Alta",
    },
    "security.alert": {
        "en": "Security alert: new sign-in from Chrome on Windows",
        "fr": "Alerte de sécurité : new sign-in",
        "es": "Alerta de seguridad",
    },
    "phone.verification_code": {
        "en": "Your verification code is 482913. It expires in 10 minutes",
        "fr": "Votre code de vérification est 482913. Il expire dans 10 minutes",
        "es": "Tu código de verificación es 482913. Caduca en 10 minutos",
    },
    "auth.two_factor_code": {
        "en": "Your sign-in code is 482913",
        "fr": "code de connexion est 482913",
        "es": "Tu código de acceso es 482913",
    },
}


def test_catalogue_covers_every_event_with_category_and_preference() -> None:
    assert set(EVENTS) == set(SAMPLE) == set(FRAGMENTS)
    assert EVENTS["phone.verification_code"].category is Category.ONE_TIME_CODE
    assert EVENTS["auth.two_factor_code"].category is Category.ONE_TIME_CODE
    assert EVENTS["security.alert"].category is Category.SECURITY
    assert EVENTS["booking.reminder_1h"].preference_key == "booking_reminders"
    assert EVENTS["booking.confirmed"].preference_key == "booking_confirmations"
    assert EVENTS["payment.failed"].preference_key == "payment_confirmations"
    assert EVENTS["ticket.created"].preference_key == "ticket_updates"
    for spec in EVENTS.values():
        assert spec.preference_key == PREFERENCE_KEY[spec.category]


@pytest.mark.parametrize("locale", ["en", "fr", "es"])
def test_every_locale_has_every_event_using_only_its_fields(locale: str) -> None:
    import tomllib

    from app.notifications.rendering import TEMPLATES_DIR

    assert {"en", "fr", "es"} <= set(builtin_locales())
    texts = tomllib.loads((TEMPLATES_DIR / f"{locale}.toml").read_text("utf-8"))
    for name, spec in EVENTS.items():
        assert name in texts, f"{name} missing in {locale}"
        used = set(re.findall(r"\{([a-z_]+)\}", texts[name]["text"]))
        assert used == set(spec.field_names) - {"currency"}, (name, locale)


@pytest.mark.parametrize("locale", ["en", "fr", "es"])
@pytest.mark.parametrize("event", sorted(SAMPLE))
def test_each_event_renders_in_each_locale(event: str, locale: str) -> None:
    text = render(event, SAMPLE[event], locale, "Europe/Paris")
    assert FRAGMENTS[event][locale] in text
    assert "{" not in text
    assert len(text) <= 1600


def test_booking_confirmation_whole_text_per_locale() -> None:
    data = {**BOOKING, "seats": 3}
    assert render("booking.confirmed", data, "en", "Europe/Paris") == (
        "Hi Ana, your booking for Dental check-up with Dr Martin on "
        f"Jun 1, 2025, 2:30:00{NNBSP}PM is confirmed (3 seats). Ref: BK-1042"
    )
    assert render("booking.confirmed", data, "fr", "Europe/Paris") == (
        "Bonjour Ana, votre réservation pour Dental check-up avec Dr Martin le "
        "1 juin 2025, 14:30:00 est confirmée (3 places). Réf. : BK-1042"
    )
    assert render("booking.confirmed", data, "es", "Europe/Paris") == (
        "Hola Ana, tu reserva de Dental check-up con Dr Martin el "
        "1 jun 2025, 14:30:00 está confirmada (3 plazas). Ref.: BK-1042"
    )


def test_ticket_created_whole_text_matches_the_seed() -> None:
    assert render("ticket.created", TICKET, "en", "UTC") == (
        "New support ticket\n"
        "Title: Database Connection Issue\n"
        "Severity: High\n"
        "Category: Technical\n"
        "Created by: John Doe\n"
        "\n"
        "View ticket: https://example.com/tickets/7"
    )


@pytest.mark.parametrize(
    ("locale", "one", "three"),
    [
        ("en", "(1 seat)", "(3 seats)"),
        ("fr", "(1 place)", "(3 places)"),
        ("es", "(1 plaza)", "(3 plazas)"),
    ],
)
def test_plural_forms(locale: str, one: str, three: str) -> None:
    assert one in render("booking.provider_new", {**BOOKING, "seats": 1}, locale, "UTC")
    assert three in render("booking.provider_new", {**BOOKING, "seats": 3}, locale, "UTC")


def test_french_zero_is_singular_and_english_zero_plural() -> None:
    code = {"code": "1", "expires_in_minutes": 0}
    assert "0 minutes" in render("auth.two_factor_code", code, "en", "UTC")
    assert "dans 0 minute." in render("auth.two_factor_code", code, "fr", "UTC")
    code["expires_in_minutes"] = 1
    assert "in 1 minute." in render("auth.two_factor_code", code, "en", "UTC")


def test_dates_shown_in_the_recipients_zone() -> None:
    data = {**BOOKING, "starts_at": "2025-01-15T18:00:00+00:00"}
    paris = render("booking.reminder_24h", data, "en", "Europe/Paris")
    new_york = render("booking.reminder_24h", data, "en", "America/New_York")
    assert f"Jan 15, 2025, 7:00:00{NNBSP}PM" in paris
    assert f"Jan 15, 2025, 1:00:00{NNBSP}PM" in new_york
    # The offset given with the instant does not matter, only the instant.
    shifted = {**BOOKING, "starts_at": "2025-01-15T13:00:00-05:00"}
    assert render("booking.reminder_24h", shifted, "en", "Europe/Paris") == paris
    assert "15 janv. 2025, 19:00:00" in render("booking.reminder_24h", data, "fr", "Europe/Paris")


@pytest.mark.parametrize(
    ("locale", "currency", "expected"),
    [
        ("en", "USD", "$1,234.50"),
        ("en", "EUR", "€1,234.50"),
        ("fr", "EUR", f"1{NNBSP}234,50{NBSP}€"),
        ("es", "EUR", f"1.234,50{NBSP}€"),
        ("en", "JPY", "¥1,234"),
    ],
)
def test_money_formatted_per_locale(locale: str, currency: str, expected: str) -> None:
    data = {**PAYMENT, "currency": currency, "amount": "1234.5" if currency != "JPY" else 1234}
    assert expected in render("refund.processed", data, locale, "UTC")


def test_locale_fallback() -> None:
    assert resolve_locale("booking.confirmed", "fr-CA") == ("fr", "fr_CA")
    assert resolve_locale("booking.confirmed", "es_MX") == ("es", "es_MX")
    assert resolve_locale("booking.confirmed", "de") == ("en", "en")
    assert resolve_locale("booking.confirmed", "not a locale") == ("en", "en")
    assert resolve_locale("booking.confirmed", None) == ("en", "en")
    assert render("booking.cancelled", BOOKING, "fr-CA", "UTC").startswith("Votre réservation")
    assert render("booking.cancelled", BOOKING, "xx", "UTC").startswith("Your booking")


def test_missing_fields_listed() -> None:
    data = {"customer_name": "Ana", "service_name": " ", "seats": None}
    with pytest.raises(MissingTemplateData) as caught:
        render("booking.confirmed", data, "en", "UTC")
    error = caught.value
    assert error.status == 422
    assert error.code == "missing_template_data"
    assert [item.field for item in error.errors or []] == [
        "body.data.service_name",
        "body.data.provider_name",
        "body.data.starts_at",
        "body.data.seats",
        "body.data.booking_reference",
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("starts_at", "tomorrow"),
        ("starts_at", "2025-06-01T12:30:00"),
        ("seats", -1),
        ("seats", "two"),
    ],
)
def test_invalid_data_refused(field: str, value: object) -> None:
    with pytest.raises(InvalidTemplateData) as caught:
        render("booking.confirmed", {**BOOKING, field: value}, "en", "UTC")
    assert caught.value.status == 422
    assert [item.field for item in caught.value.errors or []] == [f"body.data.{field}"]


def test_oversized_rendering_refused() -> None:
    ticket = {**TICKET, "title": "x" * 1500}
    assert len(render("ticket.created", {**TICKET, "title": "x" * 1400}, "en", "UTC")) <= 1600
    with pytest.raises(BodyTooLong) as caught:
        render("ticket.created", ticket, "en", "UTC")
    assert caught.value.code == "body_too_long"
    assert caught.value.status == 422


def test_operator_overrides_replace_a_text(tmp_path: Path) -> None:
    (tmp_path / "fr.toml").write_text(
        '["booking.reminder_1h"]\n'
        'text = "Dans une heure : {service_name} ({starts_at}). À tout de suite !"\n',
        encoding="utf-8",
    )
    (tmp_path / "de.toml").write_text(
        '["booking.cancelled"]\n'
        'text = "Ihre Buchung {service_name} am {starts_at} wurde storniert."\n',
        encoding="utf-8",
    )
    fr = render("booking.reminder_1h", BOOKING, "fr", "Europe/Paris", overrides_dir=tmp_path)
    assert fr == "Dans une heure : Dental check-up (1 juin 2025, 14:30:00). À tout de suite !"
    # Other events and locales keep the built-in texts.
    assert render("booking.reminder_1h", BOOKING, "en", "UTC", overrides_dir=tmp_path).startswith(
        "Reminder:"
    )
    assert "annulée" in render("booking.cancelled", BOOKING, "fr", "UTC", overrides_dir=tmp_path)
    # An override may add a locale; numbers and dates follow it.
    de = render("booking.cancelled", BOOKING, "de-AT", "Europe/Vienna", overrides_dir=tmp_path)
    assert de == "Ihre Buchung Dental check-up am 01.06.2025, 14:30:00 wurde storniert."
    # Without the directory, German falls back to English.
    assert render("booking.cancelled", BOOKING, "de", "UTC").startswith("Your booking")


def test_override_keeps_builtin_plurals(tmp_path: Path) -> None:
    (tmp_path / "en.toml").write_text(
        '["booking.provider_new"]\ntext = "{customer_name} x{seats} at {starts_at}"\n',
        encoding="utf-8",
    )
    text = render(
        "booking.provider_new", {**BOOKING, "seats": 2}, "en", "UTC", overrides_dir=tmp_path
    )
    assert text.startswith("Ana x2 seats at Jun 1, 2025")
