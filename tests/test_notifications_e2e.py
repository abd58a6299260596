"""Notifications end to end through real processes: the API (uvicorn), an arq worker, the Twilio
sandbox as its own server, PostgreSQL and Redis. What is checked is what each recipient's phone
shows (the sandbox inbox of their number): every event in each locale, read in the recipient's
language and time zone, and a team alert that reaches exactly the members who can get it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from app.core.settings import SANDBOX_ACCOUNT_SID, SANDBOX_FROM_NUMBER
from app.notifications.catalogue import EVENTS
from app.notifications.rendering import render
from app.notifications.types import CODE_EVENTS
from tests.stack import Stack, api_client, e2e_stack, settled

# Not test_pipeline_e2e's 12: both modules may run in one session.
E2E_REDIS_DB = 11

# Each locale's recipients live in a zone of their own; their US numbers (whose own zone is
# America/Los_Angeles) show that the profile's zone wins over the number's.
LOCALES = {"en": "America/New_York", "fr": "Europe/Paris", "es": "Europe/Madrid"}

STARTS_AT = "2030-07-14T17:30:00+02:00"  # summer: New York is UTC-4, Paris and Madrid UTC+2
BOOKING = {"service_name": "Yoga class", "provider_name": "Studio Nord", "starts_at": STARTS_AT}
TICKET_LINK = "https://support.example.com/t/4821"


@dataclass(frozen=True)
class Case:
    id: str
    event: str
    data: Mapping[str, Any]
    reference: str | None = None
    # The text as a reader of that locale sees it, written out: render() is not its own oracle.
    literal: Mapping[str, str] = field(default_factory=dict)


CASES = [
    Case(
        "confirmed-1-seat",
        "booking.confirmed",
        {**BOOKING, "customer_name": "Ana", "seats": 1, "booking_reference": "BK-1041"},
        reference="booking-1041",
    ),
    Case(
        "confirmed-3-seats",
        "booking.confirmed",
        {**BOOKING, "customer_name": "Ana", "seats": 3, "booking_reference": "BK-1042"},
        reference="booking-1042",
        literal={
            "en": "Hi Ana, your booking for Yoga class with Studio Nord on Jul 14, 2030, "
            "11:30 AM is confirmed (3 seats). Ref: BK-1042",
            "fr": "Bonjour Ana, votre réservation pour Yoga class avec Studio Nord le "
            "14 juil. 2030, 17:30 est confirmée (3 places). Réf. : BK-1042",
            "es": "Hola Ana, tu reserva de Yoga class con Studio Nord el 14 jul 2030, "
            "17:30 está confirmada (3 plazas). Ref.: BK-1042",
        },
    ),
    Case(
        "provider-new-2-seats",
        "booking.provider_new",
        {**BOOKING, "customer_name": "Ana Ruiz", "seats": 2},
        reference="booking-1043",
    ),
    Case(
        "status-changed",
        "booking.status_changed",
        {
            "service_name": "Yoga class",
            "starts_at": STARTS_AT,
            "old_status": "pending",
            "new_status": "confirmed",
        },
        reference="booking-1044",
        literal={
            "fr": "Votre réservation pour Yoga class le 14 juil. 2030, 17:30 a changé : "
            "en attente -> confirmée.",
        },
    ),
    Case("cancelled", "booking.cancelled", BOOKING, reference="booking-1045"),
    Case("reminder-24h", "booking.reminder_24h", BOOKING, reference="booking-1046"),
    Case("reminder-1h", "booking.reminder_1h", BOOKING, reference="booking-1047"),
    Case(
        "reminder-3-days",
        "booking.reminder",
        # Winter: New York is UTC-5, Paris and Madrid UTC+1.
        {**BOOKING, "starts_at": "2030-01-20T08:15:00Z"},
        reference="booking-1048",
    ),
    Case(
        "payment-succeeded",
        "payment.succeeded",
        {
            "amount": "1234.50",
            "currency": "EUR",
            "service_name": "Yoga class",
            "booking_reference": "BK-1042",
        },
        literal={
            "en": "Payment of €1,234.50 received for Yoga class. Ref: BK-1042. Thank you!",
            "fr": "Paiement de 1 234,50 € reçu pour Yoga class. Réf. : BK-1042. Merci !",
            "es": "Pago de 1.234,50 € recibido por Yoga class. Ref.: BK-1042. ¡Gracias!",
        },
    ),
    Case(
        "payment-failed",
        "payment.failed",
        {
            "amount": 49.99,
            "currency": "usd",
            "service_name": "Yoga class",
            "link": "https://pay.example.com/u/77",
        },
    ),
    Case(
        "refund-processed",
        "refund.processed",
        {"amount": 3000, "currency": "JPY", "service_name": "Yoga class"},
    ),
    Case(
        "ticket-created",
        "ticket.created",
        {
            "title": "Checkout fails with a 502",
            "severity": "high",
            "category": "billing",
            "created_by": "Maria Lopez",
            "link": TICKET_LINK,
        },
        literal={
            "es": "Nuevo ticket de soporte\nTítulo: Checkout fails with a 502\nGravedad: Alta\n"
            f"Categoría: Facturación\nCreado por: Maria Lopez\n\nVer ticket: {TICKET_LINK}",
        },
    ),
    Case(
        "ticket-status-changed",
        "ticket.status_changed",
        {
            "title": "Checkout fails with a 502",
            "old_status": "open",
            "new_status": "in_progress",
            "severity": "critical",
            "link": TICKET_LINK,
        },
    ),
    Case(
        "security-alert",
        "security.alert",
        {"description": "New sign-in from Firefox on Linux", "occurred_at": "2030-01-20T06:05:00Z"},
        literal={
            "en": "Security alert: New sign-in from Firefox on Linux (Jan 20, 2030, "
            "1:05 AM). If this wasn't you, secure your account now.",
        },
    ),
]

TEAM_ZONES = ("Europe/Paris", "America/Chicago")
TICKET = next(case for case in CASES if case.event == "ticket.created")


@pytest.fixture(scope="module")
def stack(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("notify-e2e-logs")
    with e2e_stack(
        database_url, redis_url, log_dir, name="sms_notify_e2e", redis_db=E2E_REDIS_DB
    ) as running:
        yield running


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    with api_client(stack) as client:
        yield client


def put_user(api: httpx.Client, user_id: str, **fields: Any) -> None:
    response = api.put(f"/api/users/{user_id}", json=fields)
    assert response.status_code == 201, response.text


def notify(api: httpx.Client, event: str, data: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    response = api.post("/api/sms/notify", json={"event": event, "data": dict(data), **extra})
    assert response.status_code == 202, response.text
    answer: dict[str, Any] = response.json()
    return answer


def received(stack: Stack, number: str) -> list[tuple[str, str]]:
    """(sid, body) of each message the number's phone got."""
    return [(item["sid"], item["body"]) for item in stack.inbox(number)]


def test_every_event_but_the_codes_has_a_case() -> None:
    assert {case.event for case in CASES} == set(EVENTS) - CODE_EVENTS


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_each_recipient_reads_the_event_in_their_language_and_time_zone(
    stack: Stack, api: httpx.Client, case: Case
) -> None:
    first_number = 3000 + 10 * CASES.index(case)
    recipients: dict[str, tuple[str, str, str]] = {}  # user id: (number, locale, zone)
    for offset, (locale, zone) in enumerate(LOCALES.items()):
        user_id, number = f"{case.id}-{locale}", f"+1415555{first_number + offset:04d}"
        put_user(
            api, user_id, phone_number=number, phone_verified=True, locale=locale, time_zone=zone
        )
        recipients[user_id] = (number, locale, zone)

    answer = notify(
        api,
        case.event,
        case.data,
        recipients={"user_ids": list(recipients)},
        reference=case.reference,
    )

    assert answer["skipped"] == []
    queued = {item["user_id"]: item["message_id"] for item in answer["queued"]}
    assert set(queued) == set(recipients)
    finals = {user_id: settled(api, message_id) for user_id, message_id in queued.items()}
    assert {user_id: final["status"] for user_id, final in finals.items()} == dict.fromkeys(
        recipients, "delivered"
    )
    inboxes = {locale: received(stack, number) for number, locale, _ in recipients.values()}
    assert inboxes == {
        locale: [(finals[user_id]["twilio_sid"], render(case.event, case.data, locale, zone))]
        for user_id, (_, locale, zone) in recipients.items()
    }
    bodies = {locale: [body for _, body in inbox] for locale, inbox in inboxes.items()}
    assert {locale: bodies[locale] for locale in case.literal} == {
        locale: [text] for locale, text in case.literal.items()
    }


def test_a_team_of_50_is_notified_in_one_call_with_the_skipped_members_listed(
    stack: Stack, api: httpx.Client
) -> None:
    members = [f"team-{n:02d}" for n in range(50)]
    numbers = {user_id: f"+1415555{4000 + n:04d}" for n, user_id in enumerate(members)}
    # Languages and zones mixed independently: a team shares a few (locale, zone) pairs.
    locales = {user_id: list(LOCALES)[n % 3] for n, user_id in enumerate(members)}
    zones = {user_id: TEAM_ZONES[n % 2] for n, user_id in enumerate(members)}
    usable, no_number, unverified = members[:30], members[30:35], members[35:40]
    preference_off, opted_out = members[40:45], members[45:]
    for user_id in usable + preference_off + opted_out:
        put_user(
            api,
            user_id,
            phone_number=numbers[user_id],
            phone_verified=True,
            locale=locales[user_id],
            time_zone=zones[user_id],
        )
    for user_id in unverified:
        put_user(api, user_id, phone_number=numbers[user_id], locale=locales[user_id])
    for user_id in preference_off:
        response = api.put(f"/api/users/{user_id}/preferences", json={"ticket_updates": False})
        assert response.status_code == 200, response.text
        assert response.json()["ticket_updates"] is False
    for n, user_id in enumerate(opted_out):
        reply = stack.signed_post(
            "/api/sms/inbound",
            {"MessageSid": f"SM{n:032x}", "From": numbers[user_id], "To": SANDBOX_FROM_NUMBER,
             "Body": "STOP", "AccountSid": SANDBOX_ACCOUNT_SID},
        )  # fmt: skip
        assert reply.status_code == 200, reply.text
        assert "unsubscribed" in reply.text
    # The members without a number are created by the subscription itself.
    team = api.put("/api/topics/team-support/subscribers", json={"user_ids": members})
    assert team.status_code == 200, team.text
    assert team.json()["subscriber_count"] == 50

    answer = notify(api, TICKET.event, TICKET.data, recipients={"topic": "team-support"})

    assert sorted((item["user_id"], item["status"]) for item in answer["queued"]) == [
        (user_id, "queued") for user_id in usable
    ]
    assert sorted((item["user_id"], item["reason"]) for item in answer["skipped"]) == sorted(
        [(user_id, "no_phone_number") for user_id in no_number]
        + [(user_id, "phone_not_verified") for user_id in unverified]
        + [(user_id, "preference_off") for user_id in preference_off]
        + [(user_id, "opted_out") for user_id in opted_out]
    )
    for item in answer["skipped"]:  # recorded, never sent
        message = api.get(f"/api/sms/status/{item['message_id']}").json()
        assert (message["status"], message["suppression_reason"]) == ("suppressed", item["reason"])
    finals = [settled(api, item["message_id"]) for item in answer["queued"]]
    assert {final["status"] for final in finals} == {"delivered"}
    expected = {
        user_id: [render(TICKET.event, TICKET.data, locales[user_id], zones[user_id])]
        if user_id in usable
        else []
        for user_id in members
    }
    inboxes = {
        user_id: [item["body"] for item in stack.inbox(numbers[user_id])] for user_id in members
    }
    assert inboxes == expected
