"""Notification templates: every event in en, fr and es, plurals, zones, money, overrides."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest

from app import worker
from app.core.settings import Settings
from app.main import create_app
from app.messages import encoding
from app.messages.categories import PREFERENCE_KEY, Category
from app.messages.exceptions import BodyTooLong
from app.notifications.catalogue import EVENTS
from app.notifications.rendering import (
    TEMPLATES_DIR,
    InvalidTemplateData,
    InvalidTemplates,
    MissingTemplateData,
    builtin_locales,
    check_templates,
    render,
    resolve_locale,
)

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
    "booking.reminder": BOOKING,
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
        "en": "changed: pending -> confirmed",
        "fr": "a changé : en attente -> confirmée",
        "es": "cambió: pendiente -> confirmada",
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
    "booking.reminder": {
        "en": "Reminder: Dental check-up with Dr Martin on Jun 1, 2025",
        "fr": "Rappel : Dental check-up avec Dr Martin le 1 juin 2025",
        "es": "Recordatorio: Dental check-up con Dr Martin el 1 jun 2025",
    },
    "payment.succeeded": {
        "en": "Payment of €1,234.50 received",
        "fr": "Paiement de 1 234,50 € reçu",
        "es": "Pago de 1.234,50 € recibido",
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
        "en": "Status: Open -> Resolved\nSeverity: High",
        "fr": "Statut : Ouvert -> Résolu\nGravité : Élevée",
        "es": "Estado: Abierto -> Resuelto\nGravedad: Alta",
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


@pytest.mark.parametrize("event", sorted(SAMPLE))
def test_english_texts_stay_gsm7_despite_cldr_no_break_spaces(event: str) -> None:
    # CLDR writes "2:30\u202fPM" and "49,50\u00a0€": kept, they would make every message UCS-2.
    text = render(event, SAMPLE[event], "en-US", "America/New_York")
    assert encoding.shape(text).encoding == "GSM-7", text


def test_no_break_spaces_become_spaces_in_every_locale() -> None:
    data = {"amount": "1234.5", "currency": "EUR", "service_name": "Yoga", "link": "x"}
    for locale in ("en", "fr", "fr-CA", "es"):
        text = render("payment.failed", data, locale, "Europe/Paris")
        assert "\u202f" not in text, (locale, text)
        assert "\u00a0" not in text, (locale, text)


def test_booking_confirmation_whole_text_per_locale() -> None:
    data = {**BOOKING, "seats": 3}
    assert render("booking.confirmed", data, "en", "Europe/Paris") == (
        "Hi Ana, your booking for Dental check-up with Dr Martin on "
        "Jun 1, 2025, 2:30 PM is confirmed (3 seats). Ref: BK-1042"
    )
    assert render("booking.confirmed", data, "fr", "Europe/Paris") == (
        "Bonjour Ana, votre réservation pour Dental check-up avec Dr Martin le "
        "1 juin 2025, 14:30 est confirmée (3 places). Réf. : BK-1042"
    )
    assert render("booking.confirmed", data, "es", "Europe/Paris") == (
        "Hola Ana, tu reserva de Dental check-up con Dr Martin el "
        "1 jun 2025, 14:30 está confirmada (3 plazas). Ref.: BK-1042"
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
    assert "Jan 15, 2025, 7:00 PM" in paris
    assert "Jan 15, 2025, 1:00 PM" in new_york
    # The offset given with the instant does not matter, only the instant.
    shifted = {**BOOKING, "starts_at": "2025-01-15T13:00:00-05:00"}
    assert render("booking.reminder_24h", shifted, "en", "Europe/Paris") == paris
    assert "15 janv. 2025, 19:00" in render("booking.reminder_24h", data, "fr", "Europe/Paris")


@pytest.mark.parametrize(
    ("locale", "currency", "expected"),
    [
        ("en", "USD", "$1,234.50"),
        ("en", "EUR", "€1,234.50"),
        ("fr", "EUR", "1 234,50 €"),
        ("es", "EUR", "1.234,50 €"),
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
    assert fr == "Dans une heure : Dental check-up (1 juin 2025, 14:30). À tout de suite !"
    # Other events and locales keep the built-in texts.
    assert render("booking.reminder_1h", BOOKING, "en", "UTC", overrides_dir=tmp_path).startswith(
        "Reminder:"
    )
    assert "annulée" in render("booking.cancelled", BOOKING, "fr", "UTC", overrides_dir=tmp_path)
    # An override may add a locale; numbers and dates follow it.
    de = render("booking.cancelled", BOOKING, "de-AT", "Europe/Vienna", overrides_dir=tmp_path)
    assert de == "Ihre Buchung Dental check-up am 01.06.2025, 14:30 wurde storniert."
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


def test_generic_reminder_whole_text_per_locale() -> None:
    assert EVENTS["booking.reminder"].preference_key == "booking_reminders"
    assert render("booking.reminder", BOOKING, "en", "Europe/Paris") == (
        "Reminder: Dental check-up with Dr Martin on Jun 1, 2025, 2:30 PM."
    )
    assert render("booking.reminder", BOOKING, "fr", "Europe/Paris") == (
        "Rappel : Dental check-up avec Dr Martin le 1 juin 2025, 14:30."
    )
    assert render("booking.reminder", BOOKING, "es", "Europe/Paris") == (
        "Recordatorio: Dental check-up con Dr Martin el 1 jun 2025, 14:30."
    )


# Template checks (run at API and worker startup) and overrides edited while running.

CANCELLED_FR = "Votre réservation pour Dental check-up avec Dr Martin le"


def _write(path: Path, text: str, *, mtime_ns: int | None = None) -> Path:
    """Write `text` and set the modification time explicitly: two writes within the file
    system's timestamp resolution must still be seen as two versions."""
    path.write_text(text, encoding="utf-8")
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def test_builtin_templates_and_valid_overrides_pass_the_check(tmp_path: Path) -> None:
    check_templates(None)
    _write(
        tmp_path / "fr.toml",
        '["booking.provider_new"]\n'
        'text = "{customer_name} : {seats} le {starts_at} ({{{provider_name}}})"\n'
        'plurals.seats = { one = "{count} place", many = "{count} de places", '
        'other = "{count} places pour {service_name}" }\n'
        '[labels.severity]\nhigh = "Haute"\n',
    )
    _write(tmp_path / "de_AT.toml", '["booking.reminder"]\ntext = "Termin: {starts_at}"\n')
    (tmp_path / "README.md").write_text("Not a template: not checked.", encoding="utf-8")
    check_templates(tmp_path)


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("en.toml", '["booking.cancelled"\ntext = "x"\n', "not valid TOML"),
        ("en.toml", '["booking.cancel"]\ntext = "x"\n', "[booking.cancel] is not a notification"),
        ("en.toml", '["booking.cancelled"]\nplurals = {}\n', "[booking.cancelled] has no `text`"),
        ("en.toml", '"booking.cancelled" = "Cancelled"\n', "[booking.cancelled] must be a table"),
        ("en.toml", '["booking.cancelled"]\ntext = 3\n', "`text` must be a string"),
        ("en.toml", '["booking.cancelled"]\ntext = " "\n', "`text` is empty"),
        (
            "en.toml",
            '["booking.cancelled"]\ntext = "Sorry {customer_name}"\n',
            "[booking.cancelled] `text`: {customer_name} is not a field of this event",
        ),
        (
            "en.toml",
            '["booking.confirmed"]\ntext = "{count} seats"\n',
            "{count} is not a field of this event",
        ),
        (
            "en.toml",
            '["booking.cancelled"]\ntext = "Cancelled: { service_name}"\n',
            "a stray `{` or `}`",
        ),
        (
            "en.toml",
            '["booking.cancelled"]\ntext = "x"\nplural.seats = { other = "x" }\n',
            "unknown key `plural`",
        ),
        (
            "en.toml",
            '["booking.confirmed"]\ntext = "{seats}"\nplurals.seats = "{count} seats"\n',
            "[booking.confirmed] plurals.seats must be a table of plural forms",
        ),
        (
            "en.toml",
            '["booking.confirmed"]\ntext = "{seats}"\nplurals = "seats"\n',
            "`plurals` must be a table",
        ),
        (
            "en.toml",
            '["booking.confirmed"]\ntext = "{seats}"\nplurals.seats = { one = 1, other = "x" }\n',
            "plurals.seats.one must be a string",
        ),
        (
            "en.toml",
            '["booking.confirmed"]\ntext = "{seats}"\n'
            'plurals.seats = { single = "a seat", other = "{count} seats" }\n',
            "plurals.seats: `single` is not a CLDR plural category",
        ),
        (
            "en.toml",
            '["booking.confirmed"]\ntext = "{seats}"\nplurals.seats = { one = "a seat" }\n',
            "plurals.seats has no `other` form",
        ),
        (
            "en.toml",
            '["booking.confirmed"]\ntext = "{seats}"\n'
            'plurals.seats = { other = "{count} seats on {date}" }\n',
            "plurals.seats.other: {date} is not a field of this event",
        ),
        (
            "en.toml",
            '["booking.confirmed"]\ntext = "{seats}"\nplurals.starts_at = { other = "x" }\n',
            "plurals.starts_at: `starts_at` is not a count field of this event (seats)",
        ),
        ("en.toml", '[labels]\nseverity = "High"\n', "[labels.severity] must be a table"),
        ("en.toml", "[labels.severity]\nhigh = 3\n", "[labels.severity] high must be a string"),
        ("en.toml", '[labels.severity]\nHigh = "H"\n', "High must be in lower case"),
        ("EN.toml", '["booking.cancelled"]\ntext = "x"\n', "did you mean en.toml?"),
        ("en.toml", '[labels.severities]\nhigh = "H"\n', "[labels.severities] is not a label set"),
        ("en.toml", "labels = 1\n", "[labels] must be a table of label sets"),
        ("de-AT.toml", '["booking.cancelled"]\ntext = "x"\n', "did you mean de_AT.toml?"),
        ("german.toml", '["booking.cancelled"]\ntext = "x"\n', "file name is not a locale"),
        (
            "en.toml",
            '["auth.two_factor_code"]\ntext = "Your code expires soon"\n',
            "[auth.two_factor_code] `text` must contain `{code}`",
        ),
    ],
)
def test_broken_override_refused_naming_file_event_and_problem(
    tmp_path: Path, name: str, content: str, problem: str
) -> None:
    path = _write(tmp_path / name, content)
    with pytest.raises(InvalidTemplates) as caught:
        check_templates(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert problem in message


def test_override_that_is_not_utf8_refused(tmp_path: Path) -> None:
    (tmp_path / "fr.toml").write_bytes(b'["booking.cancelled"]\ntext = "annul\xe9e"\n')
    with pytest.raises(InvalidTemplates, match=r"fr\.toml: not UTF-8 text"):
        check_templates(tmp_path)


def test_every_problem_listed_at_once(tmp_path: Path) -> None:
    _write(tmp_path / "en.toml", '["booking.cancelled"]\ntext = "{when}"\n["nope"]\ntext = "x"\n')
    _write(tmp_path / "fr.toml", "text = 'x\n")
    with pytest.raises(InvalidTemplates) as caught:
        check_templates(tmp_path)
    assert len(caught.value.problems) == 3
    assert [line.split(": ")[0] for line in str(caught.value).splitlines()] == [
        str(tmp_path / "en.toml"),
        str(tmp_path / "en.toml"),
        str(tmp_path / "fr.toml"),
    ]


def test_missing_overrides_directory_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidTemplates, match="directory is missing"):
        check_templates(tmp_path / "absent")


def test_edited_override_takes_effect_on_the_next_render(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "fr.toml",
        '["booking.cancelled"]\ntext = "Annulé : {service_name}."\n',
        mtime_ns=1_700_000_000_000_000_000,
    )
    check_templates(tmp_path)
    assert render("booking.cancelled", BOOKING, "fr", "UTC", overrides_dir=tmp_path) == (
        "Annulé : Dental check-up."
    )
    _write(
        path,
        '["booking.cancelled"]\ntext = "Annulation : {service_name} ({starts_at})."\n',
        mtime_ns=1_700_000_001_000_000_000,
    )
    assert render("booking.cancelled", BOOKING, "fr", "UTC", overrides_dir=tmp_path) == (
        "Annulation : Dental check-up (1 juin 2025, 12:30)."
    )


def test_unchanged_override_is_not_read_again(tmp_path: Path) -> None:
    # Same size and modification time: the version read before is used.
    mtime_ns = 1_700_000_000_000_000_000
    path = _write(
        tmp_path / "fr.toml", '["booking.cancelled"]\ntext = "Version A"\n', mtime_ns=mtime_ns
    )
    assert render("booking.cancelled", BOOKING, "fr", "UTC", overrides_dir=tmp_path) == "Version A"
    _write(path, '["booking.cancelled"]\ntext = "Version B"\n', mtime_ns=mtime_ns)
    assert render("booking.cancelled", BOOKING, "fr", "UTC", overrides_dir=tmp_path) == "Version A"
    os.utime(path, ns=(mtime_ns + 1, mtime_ns + 1))
    assert render("booking.cancelled", BOOKING, "fr", "UTC", overrides_dir=tmp_path) == "Version B"


def test_override_broken_while_running_falls_back_to_builtin_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="app.notifications")
    path = _write(
        tmp_path / "fr.toml",
        '["booking.cancelled"]\ntext = "Annulé : {service_name}."\n',
        mtime_ns=1_700_000_000_000_000_000,
    )
    check_templates(tmp_path)
    assert render("booking.cancelled", BOOKING, "fr", "UTC", overrides_dir=tmp_path).startswith(
        "Annulé"
    )
    _write(
        path,
        '["booking.cancelled"]\ntext = "Annulé : {service}."\n',
        mtime_ns=1_700_000_001_000_000_000,
    )
    for _ in range(2):
        text = render("booking.cancelled", BOOKING, "fr", "UTC", overrides_dir=tmp_path)
        assert text.startswith(CANCELLED_FR)
    # Logged once per broken version, naming the file and the problem, with no data values.
    [record] = [item for item in caplog.records if item.name == "app.notifications"]
    assert record.levelno == logging.ERROR
    message = record.getMessage()
    assert str(path) in message
    assert "[booking.cancelled] `text`: {service} is not a field" in message
    assert "Dental" not in message
    assert "Martin" not in message
    # Fixed: the override is used again.
    _write(
        path,
        '["booking.cancelled"]\ntext = "Annulé : {service_name}!"\n',
        mtime_ns=1_700_000_002_000_000_000,
    )
    assert render("booking.cancelled", BOOKING, "fr", "UTC", overrides_dir=tmp_path) == (
        "Annulé : Dental check-up!"
    )


@pytest.mark.parametrize(
    "content", ['["booking.cancelled"\n', '["booking.cancelled"]\nplurals.seats = 1\n']
)
def test_broken_override_locale_falls_back_to_default(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str
) -> None:
    # A locale only the overrides have: while its file is broken, the default locale is used.
    caplog.set_level(logging.ERROR, logger="app.notifications")
    _write(tmp_path / "de.toml", content)
    text = render("booking.cancelled", BOOKING, "de", "UTC", overrides_dir=tmp_path)
    assert text.startswith("Your booking for Dental check-up")
    assert resolve_locale("booking.cancelled", "de", tmp_path) == ("en", "en")
    assert any("de.toml" in item.getMessage() for item in caplog.records)


def test_builtin_default_locale_has_every_event() -> None:
    import tomllib

    texts = tomllib.loads((TEMPLATES_DIR / "en.toml").read_text("utf-8"))
    assert set(EVENTS) <= set(texts)


async def test_the_api_and_the_worker_refuse_to_start_with_a_broken_override(
    tmp_path: Path, settings: Settings
) -> None:
    _write(tmp_path / "en.toml", '["booking.cancelled"]\ntext = "Sorry {customer_name}"\n')
    broken = settings.model_copy(update={"notification_templates_dir": str(tmp_path)})

    with pytest.raises(InvalidTemplates, match="customer_name"):
        create_app(broken)
    with pytest.raises(InvalidTemplates, match="customer_name"):
        await worker.startup({"settings": broken})
