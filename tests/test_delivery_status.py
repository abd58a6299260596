"""Delivery status: Twilio's signature, signed status callbacks (forward only, duplicates and
late ones harmless), the backstop poller and the price fetcher."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import respx
from asgi_lifespan import LifespanManager
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import AnyHttpUrl
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from starlette.exceptions import HTTPException
from starlette.requests import Request

from app.core.crypto import PhoneCipher
from app.core.database import create_sessionmaker
from app.core.deps import get_sessionmaker, get_settings
from app.core.settings import Settings, TwilioAccount
from app.delivery_status import batching, tasks
from app.delivery_status import service as delivery_service
from app.delivery_status.batching import StatusBatcher
from app.delivery_status.service import StatusReport
from app.delivery_status.tasks import fetch_prices, poll_statuses
from app.main import create_app
from app.messages.models import Message
from app.twilio.client import TwilioClient
from app.twilio.requests import read_form
from app.twilio.signature import compute_signature, validate_signature
from tests.sending_support import (
    TO,
    add_message,
    consents,
    event_rows,
    events,
    is_suppressed,
    load,
    new_sid,
    resource,
    set_columns,
    signed,
    twilio_base,
    twilio_signature,
)

WEBHOOK = "/api/sms/webhook"

# --- X-Twilio-Signature (twilio/FACTS.md test vectors) --------------------------------------

TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
URL_443 = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
REPEATED = [
    ("Sid", "CA123"),
    ("SidAccount", "AC123"),
    ("Digits", "5678"),
    ("Digits", "1234"),
    ("Digits", "1234"),
]


def test_the_first_vector() -> None:
    assert compute_signature(TOKEN, URL, PARAMS) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert validate_signature(TOKEN, URL, PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")


def test_the_vector_with_the_default_port() -> None:
    assert compute_signature(TOKEN, URL_443, PARAMS) == "kvajT1Ptam85bY51eRf/AJRuM3w="
    assert validate_signature(TOKEN, URL_443, PARAMS, "kvajT1Ptam85bY51eRf/AJRuM3w=")


def test_the_vector_with_a_repeated_parameter() -> None:
    assert compute_signature(TOKEN, URL, REPEATED) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    assert validate_signature(TOKEN, URL, REPEATED, "IK+Dwps556ElfBT0I3Rgjkr1wJU=")
    assert not validate_signature(TOKEN, URL, REPEATED[:-2], "IK+Dwps556ElfBT0I3Rgjkr1wJU=")


@pytest.mark.parametrize(
    ("called", "signature"),
    [
        (URL, "kvajT1Ptam85bY51eRf/AJRuM3w="),  # signed with :443, configured without
        (URL_443, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),  # signed without, configured with
    ],
)
def test_the_url_counts_with_and_without_its_default_port(called: str, signature: str) -> None:
    assert validate_signature(TOKEN, called, PARAMS, signature)


def test_http_urls_count_with_and_without_port_80_but_not_other_ports() -> None:
    plain, with_80 = "http://example.com/hook", "http://example.com:80/hook"
    assert validate_signature(TOKEN, plain, PARAMS, compute_signature(TOKEN, with_80, PARAMS))
    assert validate_signature(TOKEN, with_80, PARAMS, compute_signature(TOKEN, plain, PARAMS))
    other = compute_signature(TOKEN, "http://example.com:8080/hook", PARAMS)
    assert not validate_signature(TOKEN, plain, PARAMS, other)
    https = compute_signature(TOKEN, "https://example.com:80/hook", PARAMS)
    assert not validate_signature(TOKEN, "https://example.com/hook", PARAMS, https)


@pytest.mark.parametrize(
    ("token", "url", "params"),
    [
        ("54321", URL, PARAMS),
        (TOKEN, URL.replace("foo=1", "foo=2"), PARAMS),
        (TOKEN, URL, {**PARAMS, "Digits": "1235"}),
        (TOKEN, URL, {**PARAMS, "Extra": ""}),
        (TOKEN, URL, {name: value for name, value in PARAMS.items() if name != "To"}),
    ],
)
def test_anything_else_does_not_validate(token: str, url: str, params: dict[str, str]) -> None:
    assert not validate_signature(token, url, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")


_SAFE = "abcdefghijklmnopqrstuvwxyz0123456789"
urls = st.builds(
    lambda scheme, host, port, path, query: (
        f"{scheme}://{host}{'' if port is None else f':{port}'}/{path}{query}"
    ),
    st.sampled_from(["http", "https"]),
    st.from_regex(r"[a-z][a-z0-9]{0,10}(\.[a-z]{2,5}){0,2}", fullmatch=True),
    st.none() | st.integers(min_value=1, max_value=9999),
    st.from_regex(r"[a-zA-Z0-9_/.-]{0,20}", fullmatch=True),
    st.just("") | st.from_regex(r"\?[a-z]{1,5}=[a-zA-Z0-9%]{0,8}", fullmatch=True),
)
names = st.text(min_size=1, max_size=12)
values = st.text(max_size=24)


def _changed(text: str, position: int) -> str:
    """One character of `text` replaced by another (a digit by a digit: ports stay ports)."""
    old = text[position]
    pool = "0123456789" if old.isdigit() else _SAFE
    new = next(char for char in pool if char != old)
    return text[:position] + new + text[position + 1 :]


@given(
    token=st.text(min_size=1, max_size=20),
    url=urls,
    params=st.lists(st.tuples(names, values), max_size=8),
)
def test_any_request_signed_validates(token: str, url: str, params: list[tuple[str, str]]) -> None:
    signature = compute_signature(token, url, params)
    assert signature == twilio_signature(token, url, params)
    assert validate_signature(token, url, params, signature)


@given(
    url=urls,
    params=st.dictionaries(names, values, min_size=1, max_size=8),
    data=st.data(),
)
def test_changing_one_character_of_a_value_breaks_the_signature(
    url: str, params: dict[str, str], data: st.DataObject
) -> None:
    signature = compute_signature(TOKEN, url, params)
    name = data.draw(st.sampled_from(sorted(params)))
    value = params[name]
    changed = _changed(value, data.draw(st.integers(0, len(value) - 1))) if value else "x"

    assert not validate_signature(TOKEN, url, {**params, name: changed}, signature)


@given(url=urls, params=st.dictionaries(names, values, max_size=6), data=st.data())
def test_changing_one_character_of_the_url_breaks_the_signature(
    url: str, params: dict[str, str], data: st.DataObject
) -> None:
    signature = compute_signature(TOKEN, url, params)
    changed = _changed(url, data.draw(st.integers(len("https://") - 1, len(url) - 1)))
    assume(_port_parses(changed))  # the URL is configuration (PUBLIC_BASE_URL), never garbage

    assert not validate_signature(TOKEN, changed, params, signature)


def _port_parses(url: str) -> bool:
    try:
        urlsplit(url).port  # noqa: B018
    except ValueError:
        return False
    return True


# What a form posts, in pieces that exercise the parser: separators, escapes (whole, cut,
# UTF-8 or not), raw non-ASCII bytes.
form_pieces = st.sampled_from(
    [
        *(b"a", b"Sid", b"=", b"&", b"+", b" ", b";"),
        *(b"%", b"%2", b"%41", b"%e2%82%ac", b"%ff", b"\xe2\x82\xac", b"\xff"),
    ]
)


@given(body=st.lists(form_pieces, max_size=24).map(b"".join) | st.binary(max_size=48))
def test_a_form_is_read_as_starlette_reads_it(body: bytes) -> None:
    """Twilio's forms are parsed without python-multipart: the same parameters, hence the same
    signature, whatever the body."""

    async def both() -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
        ours = await read_form(form_request(body))
        theirs = await form_request(body).form()
        return ours.multi_items(), theirs.multi_items()

    ours, theirs = asyncio.run(both())
    assert ours == theirs


def form_request(body: bytes) -> Request:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    headers = [(b"content-type", b"application/x-www-form-urlencoded; charset=utf-8")]
    # Inside an app ("app" in the scope) Starlette answers a form over its limits with a 400.
    scope = {"type": "http", "method": "POST", "headers": headers, "app": None}
    return Request(scope, receive)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"&".join(b"a=1" for _ in range(1001)), id="too-many-fields"),
        pytest.param(b"MessageSid=" + b"x" * (1024 * 1024), id="a-field-too-large"),
    ],
)
async def test_a_form_over_starlettes_limits_is_refused_as_starlette_refuses_it(
    body: bytes,
) -> None:
    with pytest.raises(HTTPException) as ours:
        await read_form(form_request(body))
    with pytest.raises(HTTPException) as theirs:
        await form_request(body).form()

    assert (ours.value.status_code, ours.value.detail) == (400, theirs.value.detail)


# --- the status callback -------------------------------------------------------------------


def callback(sid: str, status: str, **extra: str) -> dict[str, str]:
    """What Twilio posts to the StatusCallback URL."""
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "AccountSid": "AC" + "5a" * 16,
        "From": "+15005550006",
        "To": TO,
        "ApiVersion": "2010-04-01",
        **extra,
    }


async def post_callback(
    client: httpx.AsyncClient, settings: Settings, params: dict[str, str]
) -> httpx.Response:
    return await client.post(WEBHOOK, data=params, headers=signed(settings, WEBHOOK, params))


async def sent_message(
    sessionmaker: async_sessionmaker[AsyncSession], cipher: PhoneCipher, **columns: Any
) -> tuple[uuid.UUID, str]:
    sid = new_sid()
    columns = {"status": "sending", "twilio_status": "queued", "attempts": 1, **columns}
    return await add_message(sessionmaker, cipher, twilio_sid=sid, **columns), sid


async def test_callbacks_move_the_message_forward(
    client: httpx.AsyncClient,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    message_id, sid = await sent_message(sessionmaker, cipher)

    sent = await post_callback(client, settings, callback(sid, "sent"))
    assert sent.status_code == 204
    message = await load(sessionmaker, message_id)
    assert (message.status, message.twilio_status, message.final_at) == ("sent", "sent", None)

    delivered = await post_callback(
        client, settings, callback(sid, "delivered", RawDlrDoneDate="2611211230")
    )
    assert delivered.status_code == 204
    message = await load(sessionmaker, message_id)
    assert (message.status, message.twilio_status) == ("delivered", "delivered")
    assert message.final_at is not None
    assert message.error_code is None
    rows = await event_rows(sessionmaker, message_id)
    assert [(row.status, row.source, row.twilio_status) for row in rows] == [
        ("sent", "callback", "sent"),
        ("delivered", "callback", "delivered"),
    ]


async def test_status_never_moves_backward(
    client: httpx.AsyncClient,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    message_id, sid = await sent_message(sessionmaker, cipher)

    for status in ("delivered", "sent", "sending", "queued", "undelivered", "failed"):
        response = await post_callback(client, settings, callback(sid, status))
        assert response.status_code == 204

    message = await load(sessionmaker, message_id)
    assert (message.status, message.twilio_status) == ("delivered", "delivered")
    assert await events(sessionmaker, message_id) == [("delivered", "callback")]


async def test_a_duplicate_callback_changes_nothing(
    client: httpx.AsyncClient,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    message_id, sid = await sent_message(sessionmaker, cipher)
    await post_callback(client, settings, callback(sid, "sent"))
    first = await load(sessionmaker, message_id)

    again = await post_callback(client, settings, callback(sid, "sent"))

    assert again.status_code == 204
    assert await events(sessionmaker, message_id) == [("sent", "callback")]
    assert (await load(sessionmaker, message_id)).updated_at == first.updated_at


async def test_a_callback_for_an_unknown_sid_is_acknowledged_and_ignored(
    client: httpx.AsyncClient,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batching, "LATE_SID_PAUSES", (0.01, 0.01))
    message_id, _ = await sent_message(sessionmaker, cipher)

    response = await post_callback(client, settings, callback(new_sid(), "delivered"))

    assert response.status_code == 204
    assert (await load(sessionmaker, message_id)).status == "sending"
    assert await events(sessionmaker, message_id) == []


async def test_undelivered_keeps_the_error_and_its_meaning(
    client: httpx.AsyncClient,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    message_id, sid = await sent_message(sessionmaker, cipher, status="sent")

    response = await post_callback(
        client, settings, callback(sid, "undelivered", ErrorCode="30003")
    )

    assert response.status_code == 204
    message = await load(sessionmaker, message_id)
    assert (message.status, message.error_code, message.error_message) == (
        "undelivered",
        30003,
        "unreachable handset",
    )
    assert message.final_at is not None
    rows = await event_rows(sessionmaker, message_id)
    assert [(row.status, row.error_code, row.source) for row in rows] == [
        ("undelivered", 30003, "callback")
    ]


async def test_a_failed_callback_with_21610_records_the_opt_out(
    client: httpx.AsyncClient,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    message_id, sid = await sent_message(sessionmaker, cipher)

    await post_callback(client, settings, callback(sid, "failed", ErrorCode="21610"))

    assert (await load(sessionmaker, message_id)).status == "failed"
    assert await is_suppressed(sessionmaker, cipher, TO)
    rows = await consents(sessionmaker, cipher, TO)
    assert [(row.kind, row.source, row.message_sid) for row in rows] == [
        ("opt_out", "twilio_21610", sid)
    ]


class Pauses:
    """LATE_SID_PAUSES that tell when the webhook starts waiting for a SID."""

    def __init__(self) -> None:
        self.waiting = asyncio.Event()

    def __iter__(self) -> Iterator[float]:
        self.waiting.set()
        yield from (0.2, 0.2, 0.2, 0.2)


async def test_callbacks_arriving_together_are_applied_together_each_as_alone(
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sending = [await sent_message(sessionmaker, cipher) for _ in range(30)]
    failing_id, failing_sid = await sent_message(sessionmaker, cipher, status="sent")
    batches: list[int] = []  # the reports of each transaction

    async def counted(session: AsyncSession, reports: list[StatusReport]) -> set[str]:
        batches.append(len(reports))
        return await delivery_service.apply_reports(session, reports)

    monkeypatch.setattr(batching, "apply_reports", counted)
    monkeypatch.setattr(batching, "LATE_SID_PAUSES", (0.01,))
    batcher = StatusBatcher(sessionmaker)
    reports = [
        *(StatusReport(sid, "sent", None) for _, sid in sending),
        *(StatusReport(sid, "delivered", None) for _, sid in sending[:10]),  # both at once
        *(StatusReport(sid, "sent", None) for _, sid in sending[:5]),  # duplicates
        StatusReport(failing_sid, "undelivered", 30003),
        StatusReport(failing_sid, "sent", None),  # late: changes nothing
        StatusReport("SM" + "0" * 32, "delivered", None),  # no message has it
    ]

    unknown = await asyncio.gather(*(batcher.apply(report) for report in reports))
    await batcher.aclose()  # the unknown SID's report is tried again, alone, and given up

    assert batches == [len(reports), 1]  # all waiting at once: one transaction
    assert unknown == [False] * (len(reports) - 1) + [True]
    for index, (message_id, _) in enumerate(sending):
        expected = "delivered" if index < 10 else "sent"
        assert (await load(sessionmaker, message_id)).status == expected
        history = [("sent", "callback")] + ([("delivered", "callback")] if index < 10 else [])
        assert await events(sessionmaker, message_id) == history
    failed = await load(sessionmaker, failing_id)
    assert (failed.status, failed.error_code, failed.error_message) == (
        "undelivered",
        30003,
        "unreachable handset",
    )
    assert await events(sessionmaker, failing_id) == [("undelivered", "callback")]


async def test_a_report_after_one_that_beat_the_worker_waits_with_it_and_both_are_applied(
    engine: AsyncEngine, cipher: PhoneCipher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sent` beats the worker's record of the SID; `delivered` comes after the record.
    Applied at once, `delivered` would make the waiting `sent` stale, and the history would
    lose it. Committed for real: the retries run beside the test's own queries."""
    monkeypatch.setattr(batching, "LATE_SID_PAUSES", (0.05, 0.05))
    live = create_sessionmaker(engine)
    in_flight = datetime.now(UTC) + timedelta(minutes=1)
    message_id = await add_message(
        live, cipher, status="sending", attempts=1, lease_until=in_flight
    )
    sid = new_sid()
    batcher = StatusBatcher(live)
    try:
        assert await batcher.apply(StatusReport(sid, "sent", None))  # no message has it yet
        await set_columns(live, message_id, twilio_sid=sid, lease_until=None)
        assert await batcher.apply(StatusReport(sid, "delivered", None))  # waits behind it
        await batcher.aclose()

        assert (await load(live, message_id)).status == "delivered"
        assert await events(live, message_id) == [("sent", "callback"), ("delivered", "callback")]
        # Its SID known, a report of it is applied at once again.
        assert not await batcher.apply(StatusReport(sid, "delivered", None))
    finally:
        async with engine.begin() as connection:
            await connection.execute(delete(Message).where(Message.id == message_id))


async def test_reports_of_a_sid_never_recorded_are_given_up_and_its_next_one_goes_at_once(
    engine: AsyncEngine, cipher: PhoneCipher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batching, "LATE_SID_PAUSES", (0.01, 0.01))
    live = create_sessionmaker(engine)
    message_id = await add_message(live, cipher, status="sending", attempts=1)
    sid = new_sid()
    batcher = StatusBatcher(live)
    try:
        assert await batcher.apply(StatusReport(sid, "sent", None))
        assert await batcher.apply(StatusReport(sid, "delivered", None))
        await batcher.aclose()  # both tried after each pause, then given up
        await set_columns(live, message_id, twilio_sid=sid)

        assert not await batcher.apply(StatusReport(sid, "delivered", None))
        assert await events(live, message_id) == [("delivered", "callback")]
    finally:
        async with engine.begin() as connection:
            await connection.execute(delete(Message).where(Message.id == message_id))


async def test_when_a_batch_cannot_be_written_every_callback_in_it_gets_the_error(
    sessionmaker: async_sessionmaker[AsyncSession], cipher: PhoneCipher
) -> None:
    _, sid = await sent_message(sessionmaker, cipher)
    broken = create_sessionmaker(
        create_async_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    )
    batcher = StatusBatcher(broken)

    outcomes = await asyncio.gather(
        *(batcher.apply(StatusReport(sid, "sent", None)) for _ in range(3)),
        return_exceptions=True,
    )

    assert all(isinstance(outcome, OSError) for outcome in outcomes), outcomes
    # And the next one is tried again, not stuck behind the failure.
    retried = await asyncio.gather(
        batcher.apply(StatusReport(sid, "sent", None)), return_exceptions=True
    )
    assert isinstance(retried[0], OSError)


async def test_a_callback_that_beats_the_worker_is_applied_once_the_sid_is_recorded(
    settings: Settings, engine: AsyncEngine, cipher: PhoneCipher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twilio calls back moments after answering the create; the worker may not have written
    the SID yet. Committed for real, on the app's own connections."""
    pauses = Pauses()
    monkeypatch.setattr(batching, "LATE_SID_PAUSES", pauses)
    live = create_sessionmaker(engine)
    in_flight = datetime.now(UTC) + timedelta(minutes=1)
    message_id = await add_message(
        live, cipher, status="sending", attempts=1, lease_until=in_flight
    )
    sid = new_sid()
    try:
        async with LifespanManager(create_app(settings)) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as app:
                posting = asyncio.create_task(post_callback(app, settings, callback(sid, "sent")))
                await asyncio.wait_for(pauses.waiting.wait(), timeout=5)
                # The worker records Twilio's answer, after the callback came.
                await set_columns(live, message_id, twilio_sid=sid, lease_until=None)
                response = await asyncio.wait_for(posting, timeout=5)

        assert response.status_code == 204
        message = await load(live, message_id)
        assert (message.status, message.twilio_status) == ("sent", "sent")
        assert await events(live, message_id) == [("sent", "callback")]
    finally:
        async with engine.begin() as connection:
            await connection.execute(delete(Message).where(Message.id == message_id))


def _other_url(settings: Settings, params: dict[str, str]) -> dict[str, str]:
    url = "http://testserver" + WEBHOOK  # what the app sees, not what Twilio called
    return {"X-Twilio-Signature": twilio_signature(settings.twilio.auth_token, url, params)}


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(lambda settings, params: {}, id="missing"),
        pytest.param(lambda settings, params: {"X-Twilio-Signature": ""}, id="empty"),
        pytest.param(
            lambda settings, params: {
                "X-Twilio-Signature": twilio_signature(
                    "wrong-token", settings.public_base + WEBHOOK, params
                )
            },
            id="wrong-token",
        ),
        pytest.param(_other_url, id="signed-for-the-url-the-app-sees"),
        pytest.param(
            lambda settings, params: signed(settings, "/api/sms/inbound", params), id="other-path"
        ),
        pytest.param(
            lambda settings, params: signed(settings, WEBHOOK, {**params, "MessageStatus": "sent"}),
            id="other-params",
        ),
    ],
)
async def test_a_callback_without_a_valid_signature_is_refused(
    client: httpx.AsyncClient,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    headers: Any,
) -> None:
    message_id, sid = await sent_message(sessionmaker, cipher)
    params = callback(sid, "delivered")

    response = await client.post(WEBHOOK, data=params, headers=headers(settings, params))

    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "invalid_signature"
    assert (await load(sessionmaker, message_id)).status == "sending"
    assert await events(sessionmaker, message_id) == []


async def test_the_signature_is_checked_on_the_public_url_not_the_one_the_app_sees(
    client: httpx.AsyncClient,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    assert settings.public_base != "http://testserver"
    _, sid = await sent_message(sessionmaker, cipher)
    params = callback(sid, "sent")

    assert (
        await client.post(WEBHOOK, data=params, headers=_other_url(settings, params))
    ).status_code == 403
    assert (await post_callback(client, settings, params)).status_code == 204


async def test_unknown_parameters_count_in_the_signature(
    client: httpx.AsyncClient,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    message_id, sid = await sent_message(sessionmaker, cipher)
    params = callback(sid, "sent", ChannelPrefix="sms", NewThing="added by Twilio one day")
    without_new = {name: value for name, value in params.items() if name != "NewThing"}

    refused = await client.post(
        WEBHOOK, data=params, headers=signed(settings, WEBHOOK, without_new)
    )
    assert refused.status_code == 403
    assert (await load(sessionmaker, message_id)).status == "sending"

    accepted = await post_callback(client, settings, params)
    assert accepted.status_code == 204
    assert (await load(sessionmaker, message_id)).status == "sent"


# --- the backstop poller and prices --------------------------------------------------------


class FakeTwilio:
    """Twilio's fetch endpoint: the resources it knows, 404 for any other SID."""

    def __init__(self) -> None:
        self.resources: dict[str, dict[str, Any]] = {}
        self.fetched: list[str] = []

    def answer(self, request: httpx.Request) -> httpx.Response:
        found = re.search(r"/Messages/([^/]+)\.json$", request.url.path)
        assert found is not None
        sid = found.group(1)
        self.fetched.append(sid)
        if sid not in self.resources:
            return httpx.Response(404, json={"code": 20404, "message": "not found", "status": 404})
        return httpx.Response(200, json=self.resources[sid])


@pytest.fixture
def fake_twilio(settings: Settings) -> Iterator[FakeTwilio]:
    fake = FakeTwilio()
    with respx.mock(base_url=twilio_base(settings)) as router:
        router.get(path__regex=r"/Messages/[^/]+\.json$").mock(side_effect=fake.answer)
        yield fake


def worker_ctx(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], twilio: TwilioClient
) -> dict[str, Any]:
    return {"state": {"settings": settings, "sessionmaker": sessionmaker, "twilio": twilio}}


def ago(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


async def test_the_poller_applies_what_twilio_says_of_quiet_messages(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    twilio: TwilioClient,
    fake_twilio: FakeTwilio,
) -> None:
    quiet = settings.status_poll_after_seconds
    delivered_id, delivered_sid = await sent_message(
        sessionmaker, cipher, status="sent", updated_at=ago(quiet + 60)
    )
    failed_id, failed_sid = await sent_message(sessionmaker, cipher, updated_at=ago(quiet + 60))
    recent_id, recent_sid = await sent_message(sessionmaker, cipher, updated_at=ago(quiet / 2))
    _, final_sid = await sent_message(
        sessionmaker, cipher, status="delivered", updated_at=ago(quiet + 60)
    )
    fake_twilio.resources[delivered_sid] = resource(delivered_sid, status="delivered")
    fake_twilio.resources[failed_sid] = resource(failed_sid, status="failed", error_code=30007)
    fake_twilio.resources[recent_sid] = resource(recent_sid, status="delivered")
    fake_twilio.resources[final_sid] = resource(final_sid, status="delivered")

    moved = await poll_statuses(worker_ctx(settings, sessionmaker, twilio))

    assert moved >= 2
    assert set(fake_twilio.fetched) >= {delivered_sid, failed_sid}
    assert recent_sid not in fake_twilio.fetched
    assert final_sid not in fake_twilio.fetched
    delivered = await load(sessionmaker, delivered_id)
    assert (delivered.status, delivered.twilio_status) == ("delivered", "delivered")
    assert delivered.final_at is not None
    assert await events(sessionmaker, delivered_id) == [("delivered", "poller")]
    failed = await load(sessionmaker, failed_id)
    assert (failed.status, failed.error_code, failed.error_message) == (
        "failed",
        30007,
        "carrier filtering",
    )
    assert (await load(sessionmaker, recent_id)).status == "sending"


async def test_the_poller_without_news_waits_another_round(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    twilio: TwilioClient,
    fake_twilio: FakeTwilio,
) -> None:
    quiet = settings.status_poll_after_seconds
    message_id, sid = await sent_message(
        sessionmaker, cipher, status="sent", twilio_status="sent", updated_at=ago(quiet + 60)
    )
    before = (await load(sessionmaker, message_id)).updated_at
    fake_twilio.resources[sid] = resource(sid, status="sent")
    ctx = worker_ctx(settings, sessionmaker, twilio)

    await poll_statuses(ctx)

    message = await load(sessionmaker, message_id)
    assert message.status == "sent"
    assert message.updated_at > before + timedelta(seconds=60)
    assert await events(sessionmaker, message_id) == []
    # Asked again only after another quiet period.
    fake_twilio.fetched.clear()
    await poll_statuses(ctx)
    assert sid not in fake_twilio.fetched


async def test_a_message_twilio_does_not_know_is_left_as_it_is(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    twilio: TwilioClient,
    fake_twilio: FakeTwilio,
) -> None:
    quiet = settings.status_poll_after_seconds
    unknown_id, unknown_sid = await sent_message(sessionmaker, cipher, updated_at=ago(quiet + 60))
    known_id, known_sid = await sent_message(sessionmaker, cipher, updated_at=ago(quiet + 60))
    fake_twilio.resources[known_sid] = resource(known_sid, status="delivered")

    await poll_statuses(worker_ctx(settings, sessionmaker, twilio))

    assert unknown_sid in fake_twilio.fetched
    assert (await load(sessionmaker, unknown_id)).status == "sending"
    assert (await load(sessionmaker, known_id)).status == "delivered"


async def test_prices_are_fetched_once_the_message_is_final(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    twilio: TwilioClient,
    fake_twilio: FakeTwilio,
) -> None:
    # As the final status leaves them: updated the moment they became final.
    minute_ago, just_now = ago(60), ago(5)
    priced_id, priced_sid = await sent_message(
        sessionmaker, cipher, status="delivered", final_at=minute_ago, updated_at=minute_ago
    )
    pending_id, pending_sid = await sent_message(
        sessionmaker, cipher, status="undelivered", final_at=minute_ago, updated_at=minute_ago
    )
    fresh_id, fresh_sid = await sent_message(
        sessionmaker, cipher, status="delivered", final_at=just_now, updated_at=just_now
    )
    fake_twilio.resources[priced_sid] = resource(
        priced_sid, status="delivered", price="-0.01580", price_unit="USD", num_segments="2"
    )
    fake_twilio.resources[pending_sid] = resource(pending_sid, status="undelivered", price=None)
    fake_twilio.resources[fresh_sid] = resource(fresh_sid, status="delivered", price="-0.0079")
    ctx = worker_ctx(settings, sessionmaker, twilio)

    priced = await fetch_prices(ctx)

    assert priced >= 1
    assert fresh_sid not in fake_twilio.fetched  # not 30 s final yet
    message = await load(sessionmaker, priced_id)
    assert (message.price, message.price_unit, message.segments) == (Decimal("-0.01580"), "USD", 2)
    assert message.price_checked_at is not None
    pending = await load(sessionmaker, pending_id)
    assert pending.price is None
    assert pending.price_checked_at is None
    assert (await load(sessionmaker, fresh_id)).price is None
    # Asked without a price: not asked again at the next run, only some minutes later.
    fake_twilio.fetched.clear()
    await fetch_prices(ctx)
    assert pending_sid not in fake_twilio.fetched

    # Some minutes later it is asked again; the priced one never is.
    async with sessionmaker() as session:
        await session.execute(
            update(Message).where(Message.id == pending_id).values(updated_at=ago(11 * 60))
        )
        await session.commit()
    fake_twilio.fetched.clear()
    fake_twilio.resources[pending_sid] = resource(pending_sid, price="-0.00790")
    await fetch_prices(ctx)
    assert pending_sid in fake_twilio.fetched
    assert priced_sid not in fake_twilio.fetched
    pending = await load(sessionmaker, pending_id)
    assert pending.price == Decimal("-0.00790")
    assert pending.price_checked_at is not None


async def test_messages_twilio_never_answers_for_do_not_starve_the_poller(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    twilio: TwilioClient,
    fake_twilio: FakeTwilio,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tasks, "BATCH", 1)
    quiet = settings.status_poll_after_seconds
    _, unknown_sid = await sent_message(sessionmaker, cipher, updated_at=ago(quiet + 120))
    known_id, known_sid = await sent_message(sessionmaker, cipher, updated_at=ago(quiet + 60))
    fake_twilio.resources[known_sid] = resource(known_sid, status="delivered")
    ctx = worker_ctx(settings, sessionmaker, twilio)

    await poll_statuses(ctx)
    await poll_statuses(ctx)

    assert fake_twilio.fetched[:2] == [unknown_sid, known_sid]
    assert (await load(sessionmaker, known_id)).status == "delivered"


async def test_messages_twilio_never_prices_do_not_starve_the_price_fetcher(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    twilio: TwilioClient,
    fake_twilio: FakeTwilio,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tasks, "BATCH", 1)
    _, unpriced_sid = await sent_message(
        sessionmaker, cipher, status="failed", final_at=ago(120), updated_at=ago(120)
    )
    _, missing_sid = await sent_message(
        sessionmaker, cipher, status="failed", final_at=ago(110), updated_at=ago(110)
    )
    priced_id, priced_sid = await sent_message(
        sessionmaker, cipher, status="delivered", final_at=ago(60), updated_at=ago(60)
    )
    fake_twilio.resources[unpriced_sid] = resource(unpriced_sid, status="failed", price=None)
    fake_twilio.resources[priced_sid] = resource(priced_sid, status="delivered", price="-0.0079")
    ctx = worker_ctx(settings, sessionmaker, twilio)

    for _ in range(3):
        await fetch_prices(ctx)

    assert fake_twilio.fetched == [unpriced_sid, missing_sid, priced_sid]
    assert (await load(sessionmaker, priced_id)).price == Decimal("-0.0079")


async def test_behind_a_path_prefix_the_signature_is_checked_on_the_public_url(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    # Served under /sms (uvicorn --root-path /sms); Twilio calls https://sms.example.com/sms/…
    public = settings.model_copy(
        update={"public_base_url": AnyHttpUrl("https://sms.example.com/sms")}
    )
    app = create_app(public)
    app.dependency_overrides[get_sessionmaker] = lambda: sessionmaker
    message_id, sid = await sent_message(sessionmaker, cipher)
    params = callback(sid, "sent")

    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, root_path="/sms")
        async with httpx.AsyncClient(transport=transport, base_url="http://internal") as client:
            response = await client.post(
                "/sms" + WEBHOOK, data=params, headers=signed(public, WEBHOOK, params)
            )

    assert response.status_code == 204, response.text
    assert (await load(sessionmaker, message_id)).status == "sent"


async def test_without_an_auth_token_no_signature_is_accepted(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], cipher: PhoneCipher
) -> None:
    # An empty key would make every HMAC forgeable: such a request is refused outright.
    message_id, sid = await sent_message(sessionmaker, cipher)
    params = callback(sid, "delivered")
    forged = twilio_signature("", settings.public_base + WEBHOOK, params)
    account = replace(settings.twilio, auth_token="")
    app = create_app(settings)
    app.dependency_overrides[get_sessionmaker] = lambda: sessionmaker
    app.dependency_overrides[get_settings] = lambda: _WithAccount(settings, account)

    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            response = await client.post(
                WEBHOOK, data=params, headers={"X-Twilio-Signature": forged}
            )

    assert response.status_code == 403
    assert (await load(sessionmaker, message_id)).status == "sending"


class _WithAccount:
    """Settings whose Twilio account is replaced (Settings itself refuses an empty token)."""

    def __init__(self, settings: Settings, account: TwilioAccount) -> None:
        self._settings = settings
        self.twilio = account

    def __getattr__(self, name: str) -> Any:
        return getattr(self._settings, name)
