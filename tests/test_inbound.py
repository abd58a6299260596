"""Inbound messages: STOP, START and HELP (twilio/FACTS.md keywords), the TwiML replies, the
suppression list and consent history behind them, and how a STOP stops later sends."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest
import redis.asyncio
import respx
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.principal import Scope
from app.core.crypto import PhoneCipher
from app.core.deps import get_sessionmaker
from app.core.settings import Settings
from app.main import create_app
from app.outbox.service import Outbox, Outcome
from app.twilio.client import TwilioClient
from tests.sending_support import (
    OTHER,
    TO,
    consents,
    is_suppressed,
    load,
    make_due,
    signed,
    twilio_base,
    twilio_signature,
)

INBOUND = "/api/sms/inbound"
OPT_OUT = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"]
OPT_IN = ["START", "YES", "UNSTOP"]
HELP = ["HELP", "INFO"]
EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def inbound(body: str, sender: str = TO, **extra: str) -> dict[str, str]:
    """What Twilio posts for a message to one of our numbers."""
    return {
        "MessageSid": "SM" + uuid.uuid4().hex,
        "AccountSid": "AC" + "5a" * 16,
        "From": sender,
        "To": "+15005550006",
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsStatus": "received",
        "FromCountry": "US",
        "ApiVersion": "2010-04-01",
        **extra,
    }


async def post_inbound(
    client: httpx.AsyncClient, settings: Settings, params: dict[str, str]
) -> httpx.Response:
    response = await client.post(INBOUND, data=params, headers=signed(settings, INBOUND, params))
    if response.status_code == 200:
        assert response.headers["content-type"].startswith("text/xml")
    return response


def reply_of(response: httpx.Response) -> str | None:
    """The text of the TwiML <Message>, None for an empty <Response/>."""
    root = ElementTree.fromstring(response.content)  # noqa: S314 (our own answer)
    assert root.tag == "Response"
    messages = root.findall("Message")
    assert len(messages) <= 1
    return messages[0].text if messages else None


async def kinds(
    sessionmaker: async_sessionmaker[AsyncSession], cipher: PhoneCipher, number: str = TO
) -> list[tuple[str, str | None, str]]:
    return [(c.kind, c.keyword, c.source) for c in await consents(sessionmaker, cipher, number)]


@pytest.mark.parametrize("keyword", [*OPT_OUT, "stop", "Stop", "  stop  ", "\tUnsubscribe\n"])
async def test_stop_suppresses_the_number_and_confirms_once(
    client: httpx.AsyncClient,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    keyword: str,
) -> None:
    params = inbound(keyword)

    response = await post_inbound(client, settings, params)

    assert response.status_code == 200
    assert reply_of(response) == settings.sms_opt_out_reply
    assert await is_suppressed(sessionmaker, cipher, TO)
    assert not await is_suppressed(sessionmaker, cipher, OTHER)
    word = keyword.strip().upper()
    assert await kinds(sessionmaker, cipher) == [("opt_out", word, "inbound_sms")]
    assert (await consents(sessionmaker, cipher, TO))[0].message_sid == params["MessageSid"]


async def test_a_second_stop_is_recorded_but_not_confirmed_again(
    client: httpx.AsyncClient,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    await post_inbound(client, settings, inbound("STOP"))

    second = await post_inbound(client, settings, inbound("quit"))

    assert second.status_code == 200
    assert second.text == EMPTY
    assert await kinds(sessionmaker, cipher) == [
        ("opt_out", "STOP", "inbound_sms"),
        ("opt_out", "QUIT", "inbound_sms"),
    ]


@pytest.mark.parametrize("keyword", [*OPT_IN, "start", " Yes "])
async def test_start_lifts_the_stop_and_confirms(
    client: httpx.AsyncClient,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    keyword: str,
) -> None:
    await post_inbound(client, settings, inbound("STOP"))

    response = await post_inbound(client, settings, inbound(keyword))

    assert response.status_code == 200
    assert reply_of(response) == settings.sms_opt_in_reply
    assert not await is_suppressed(sessionmaker, cipher, TO)
    assert await kinds(sessionmaker, cipher) == [
        ("opt_out", "STOP", "inbound_sms"),
        ("opt_in", keyword.strip().upper(), "inbound_sms"),
    ]


@pytest.mark.parametrize("keyword", [*HELP, "help", " info "])
async def test_help_answers_with_the_help_text(
    client: httpx.AsyncClient,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    keyword: str,
) -> None:
    response = await post_inbound(client, settings, inbound(keyword))

    assert response.status_code == 200
    assert reply_of(response) == settings.sms_help_reply
    assert not await is_suppressed(sessionmaker, cipher, TO)
    assert await kinds(sessionmaker, cipher) == [("help", keyword.strip().upper(), "inbound_sms")]


@pytest.mark.parametrize(
    ("keyword", "kind"), [("STOP", "opt_out"), ("START", "opt_in"), ("HELP", "help")]
)
async def test_with_advanced_opt_out_twilio_answers_and_we_only_record(
    client: httpx.AsyncClient,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    keyword: str,
    kind: str,
) -> None:
    opt_out_type = {"STOP": "STOP", "START": "START", "HELP": "HELP"}[keyword]

    response = await post_inbound(client, settings, inbound(keyword, OptOutType=opt_out_type))

    assert response.status_code == 200
    assert response.text == EMPTY
    assert await is_suppressed(sessionmaker, cipher, TO) is (kind == "opt_out")
    assert await kinds(sessionmaker, cipher) == [(kind, keyword, "inbound_sms")]


@pytest.mark.parametrize(
    ("body", "opt_out_type", "kind", "suppressed"),
    [("ARRET", "STOP", "opt_out", True), ("Commencer", "START", "opt_in", False)],
)
async def test_twilio_custom_keywords_count_by_their_opt_out_type(
    client: httpx.AsyncClient,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    body: str,
    opt_out_type: str,
    kind: str,
    suppressed: bool,
) -> None:
    """Advanced Opt-Out matches keywords of its own (custom, other languages): Twilio has
    stopped (or resumed) the number, so must we, or our view of consent drifts from Twilio's."""
    if kind == "opt_in":
        await post_inbound(client, settings, inbound("STOP"))

    response = await post_inbound(client, settings, inbound(body, OptOutType=opt_out_type))

    assert response.status_code == 200
    assert response.text == EMPTY
    assert await is_suppressed(sessionmaker, cipher, TO) is suppressed
    assert (await kinds(sessionmaker, cipher))[-1] == (kind, body.upper(), "inbound_sms")


@pytest.mark.parametrize(
    "body",
    [
        "Thanks, see you tomorrow",
        "STOP please",
        "please stop",
        "STOP STOP",
        "stopp",
        "HELP!",
        "",
        "   ",
        "Yes, I'll be there",
    ],
)
async def test_other_messages_get_no_reply_and_change_nothing(
    client: httpx.AsyncClient,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    body: str,
) -> None:
    response = await post_inbound(client, settings, inbound(body))

    assert response.status_code == 200
    assert response.text == EMPTY
    assert not await is_suppressed(sessionmaker, cipher, TO)
    assert await kinds(sessionmaker, cipher) == []


@pytest.fixture
async def odd_replies_client(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> AsyncIterator[httpx.AsyncClient]:
    configured = settings.model_copy(
        update={
            "sms_help_reply": 'Help & info: <a href="x">site</a> Msg&data rates may apply',
            "sms_opt_out_reply": "Bye <3 & farewell ]]> ok",
            "sms_opt_in_reply": "Welcome back 'friend' & \"family\"",
        }
    )
    app = create_app(configured)
    app.dependency_overrides[get_sessionmaker] = lambda: sessionmaker
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


async def test_xml_special_characters_in_the_replies_are_escaped(
    odd_replies_client: httpx.AsyncClient, settings: Settings
) -> None:
    help_ = await post_inbound(odd_replies_client, settings, inbound("HELP"))
    stop = await post_inbound(odd_replies_client, settings, inbound("STOP"))
    start = await post_inbound(odd_replies_client, settings, inbound("START"))

    assert reply_of(help_) == 'Help & info: <a href="x">site</a> Msg&data rates may apply'
    assert "&amp;" in help_.text
    assert "<a " not in help_.text
    assert reply_of(stop) == "Bye <3 & farewell ]]> ok"
    assert reply_of(start) == "Welcome back 'friend' & \"family\""


@pytest.mark.parametrize("sign_with", ["nothing", "wrong-token", "the-app-url"])
async def test_an_unsigned_inbound_message_is_refused_and_writes_nothing(
    client: httpx.AsyncClient,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    sign_with: str,
) -> None:
    params = inbound("STOP")
    url = {"the-app-url": "http://testserver"}.get(sign_with, settings.public_base) + INBOUND
    token = "wrong-token" if sign_with == "wrong-token" else settings.twilio.auth_token
    headers = (
        {}
        if sign_with == "nothing"
        else {"X-Twilio-Signature": twilio_signature(token, url, params)}
    )

    response = await client.post(INBOUND, data=params, headers=headers)

    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "invalid_signature"
    assert not await is_suppressed(sessionmaker, cipher, TO)
    assert await kinds(sessionmaker, cipher) == []


async def test_numbers_are_never_stored_in_clear(
    client: httpx.AsyncClient,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
) -> None:
    for body in ("STOP", "HELP", "START", "STOP"):
        await post_inbound(client, settings, inbound(body))

    async with sessionmaker() as session:
        rows = [
            row[0]
            for table in ("consent_events", "suppressions")
            for row in await session.execute(text(f"SELECT t::text FROM {table} t"))  # noqa: S608
        ]
    assert len(rows) >= 5
    digits = TO.removeprefix("+")
    for row in rows:
        assert digits not in row
        assert digits[1:] not in row
        assert "415" + "555" not in row


# --- a STOP stops what comes after it, and what was queued before -------------------------


@pytest.fixture
def twilio_api(settings: Settings) -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=twilio_base(settings), assert_all_called=False) as router:
        yield router


async def test_a_send_to_a_number_that_said_stop_is_suppressed(
    client: httpx.AsyncClient,
    settings: Settings,
    make_api_key: Any,
    redis_client: redis.asyncio.Redis,
) -> None:
    sender = await make_api_key(Scope.SMS_SEND)
    await post_inbound(client, settings, inbound("STOP"))

    stopped = await client.post("/api/sms/send", json={"to": TO, "body": "hi"}, headers=sender)
    other = await client.post("/api/sms/send", json={"to": OTHER, "body": "hi"}, headers=sender)

    assert stopped.status_code == 202
    assert (stopped.json()["status"], stopped.json()["suppression_reason"]) == (
        "suppressed",
        "opted_out",
    )
    assert other.json()["status"] == "queued"

    await post_inbound(client, settings, inbound("START"))
    again = await client.post("/api/sms/send", json={"to": TO, "body": "hi"}, headers=sender)
    assert again.json()["status"] == "queued"


async def test_a_message_queued_before_the_stop_is_suppressed_at_send_time(
    client: httpx.AsyncClient,
    settings: Settings,
    make_api_key: Any,
    redis_client: redis.asyncio.Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    twilio_api: respx.MockRouter,
) -> None:
    sender = await make_api_key(Scope.SMS_SEND)
    queued = await client.post("/api/sms/send", json={"to": TO, "body": "hi"}, headers=sender)
    assert queued.json()["status"] == "queued"
    message_id = uuid.UUID(queued.json()["id"])
    await post_inbound(client, settings, inbound("Stop"))
    await make_due(sessionmaker, message_id)
    twilio = TwilioClient(settings.twilio, timeout_seconds=2, transport=httpx.AsyncHTTPTransport())
    try:
        outbox = Outbox(settings, sessionmaker, cipher, twilio, random.Random(3))
        attempt = await outbox.send(message_id)
    finally:
        await twilio.aclose()

    assert attempt.outcome is Outcome.SUPPRESSED
    assert not twilio_api.calls
    message = await load(sessionmaker, message_id)
    assert (message.status, message.suppression_reason) == ("suppressed", "opted_out")
    status = await client.get(f"/api/sms/status/{message_id}", headers=sender)
    assert status.json()["status"] == "suppressed"
    assert [change["status"] for change in status.json()["history"]][-1] == "suppressed"
