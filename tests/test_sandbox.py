"""The Twilio sandbox: Twilio's Messages API as the OpenAPI description has it, the carrier it
simulates (magic numbers, outcomes, signed callbacks), its inbox and its fault knobs.

Every answer of the Twilio routes is checked against twilio_api_v2010.json with openapi-core.
Callbacks go over real HTTP to a small recording server."""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl
from uuid import uuid4

import httpx
import openapi_schema_validator
import pytest
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from openapi_core import OpenAPI
from openapi_core.testing import MockResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.core.settings import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN
from app.twilio.signature import validate_signature
from app.twilio_sandbox import SandboxConfig, create_sandbox_app
from app.twilio_sandbox.callbacks import CallbackSender
from app.twilio_sandbox.carrier import Status
from app.twilio_sandbox.delivery import Delivery, DeliveryPlan
from app.twilio_sandbox.faults import FaultDice
from app.twilio_sandbox.state import Sandbox
from app.twilio_sandbox.store import SandboxMessage, new_message_sid
from tests.twilio_contract import openapi_request, twilio_openapi, twilio_spec

PROJECT = Path(__file__).resolve().parents[1]
ACCOUNT = SANDBOX_ACCOUNT_SID
TOKEN = SANDBOX_AUTH_TOKEN
BASE = f"/2010-04-01/Accounts/{ACCOUNT}"
SENDER = "+15005550006"
HANDSET = "+14155552671"
STEP = 0.02  # seconds from one status to the next
SID_PATTERN = re.compile(r"^SM[0-9a-f]{32}$")
RFC2822 = re.compile(r"^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0000$")
# The error body Twilio documents (twilio/FACTS.md); the OpenAPI description declares no error
# answers at all, so this is what error bodies are held to.
TWILIO_ERROR_SCHEMA = {
    "type": "object",
    "required": ["code", "message", "more_info", "status"],
    "additionalProperties": False,
    "properties": {
        "code": {"type": "integer"},
        "message": {"type": "string", "minLength": 1},
        "more_info": {"type": "string", "pattern": r"^https://www\.twilio\.com/docs/errors/\d+$"},
        "status": {"type": "integer"},
    },
}


# --- The contract -------------------------------------------------------------------------


@dataclass(frozen=True)
class Contract:
    api: OpenAPI
    message_fields: frozenset[str]
    list_fields: frozenset[str]

    def check(self, response: httpx.Response, *, request_valid: bool = True) -> None:
        """The answer validates against the description (errors: against Twilio's error
        shape); the request too, unless the test sends one the description refuses."""
        mock = openapi_request(response.request)
        if request_valid:
            self.api.validate_request(mock)
        if not response.is_success:
            body = response.json()
            openapi_schema_validator.validate(
                body, TWILIO_ERROR_SCHEMA, cls=openapi_schema_validator.OAS30Validator
            )
            assert body["status"] == response.status_code
            assert body["more_info"].endswith(str(body["code"]))
            return
        answer = MockResponse(
            response.content,
            status_code=response.status_code,
            content_type=response.headers.get("content-type", "application/json"),
        )
        self.api.validate_response(mock, answer)
        if response.status_code == 204:
            return
        body = response.json()
        if "messages" in body:
            assert set(body) == self.list_fields
            for message in body["messages"]:
                assert set(message) == self.message_fields
        else:
            assert set(body) == self.message_fields


@pytest.fixture(scope="session")
def contract() -> Contract:
    spec = twilio_spec()
    message = spec["components"]["schemas"]["api.v2010.account.message"]
    listing = spec["paths"]["/2010-04-01/Accounts/{AccountSid}/Messages.json"]["get"]
    list_schema = listing["responses"]["200"]["content"]["application/json"]["schema"]
    return Contract(
        twilio_openapi(),
        frozenset(message["properties"]),
        frozenset(list_schema["properties"]),
    )


class TwilioApi:
    """The sandbox's Twilio routes; every answer is checked against the contract."""

    def __init__(self, client: httpx.AsyncClient, contract: Contract) -> None:
        self.client = client
        self.contract = contract

    async def create(self, *, request_valid: bool = True, **form: str) -> httpx.Response:
        return await self.post_form(form, request_valid=request_valid)

    async def post_form(
        self, form: dict[str, str], *, request_valid: bool = True
    ) -> httpx.Response:
        response = await self.client.post(f"{BASE}/Messages.json", data=form)
        self.contract.check(response, request_valid=request_valid)
        return response

    async def send(self, to: str = HANDSET, body: str = "Hello", **form: str) -> dict[str, Any]:
        """Creates a message that must be accepted."""
        response = await self.post_form({"To": to, "From": SENDER, "Body": body, **form})
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def fetch(self, sid: str) -> httpx.Response:
        response = await self.client.get(f"{BASE}/Messages/{sid}.json")
        self.contract.check(response)
        return response

    async def status(self, sid: str) -> str:
        status: str = (await self.fetch(sid)).json()["status"]
        return status

    async def reaches(self, sid: str, status: str) -> None:
        async def there() -> bool:
            return await self.status(sid) == status

        await eventually(there)

    async def list(
        self,
        params: dict[str, str] | None = None,
        *,
        url: str | None = None,
        request_valid: bool = True,
    ) -> httpx.Response:
        response = await self.client.get(url or f"{BASE}/Messages.json", params=params)
        self.contract.check(response, request_valid=request_valid)
        return response

    async def update(self, sid: str, *, request_valid: bool = True, **form: str) -> httpx.Response:
        response = await self.client.post(f"{BASE}/Messages/{sid}.json", data=form)
        self.contract.check(response, request_valid=request_valid)
        return response

    async def delete(self, sid: str) -> httpx.Response:
        response = await self.client.delete(f"{BASE}/Messages/{sid}.json")
        self.contract.check(response)
        return response


# --- Servers ------------------------------------------------------------------------------


class InProcessServer(uvicorn.Server):
    """Leaves signals to pytest: Ctrl-C stops the run, not this server."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """A real uvicorn server on a free port of 127.0.0.1, in this event loop."""
    server = InProcessServer(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="auto")
    )
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done():
            task.result()
        assert time.monotonic() < deadline, "uvicorn did not start"
        await asyncio.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@dataclass(frozen=True)
class Callback:
    url: str
    params: list[tuple[str, str]]
    signature: str

    @property
    def form(self) -> dict[str, str]:
        return dict(self.params)

    @property
    def status(self) -> str:
        return self.form["MessageStatus"]


class Receiver:
    """Records every POST; paths containing `/fail/` answer 500, `/slow/` after 0.2 s."""

    def __init__(self) -> None:
        self.received: list[Callback] = []
        self.base_url = ""
        self.app = Starlette(routes=[Route("/{path:path}", self._record, methods=["POST"])])

    async def _record(self, request: Request) -> Response:
        params = parse_qsl((await request.body()).decode(), keep_blank_values=True)
        signature = request.headers.get("X-Twilio-Signature", "")
        self.received.append(Callback(str(request.url), params, signature))
        if "/slow/" in request.url.path:
            await asyncio.sleep(0.2)
        return Response(status_code=500 if "/fail/" in request.url.path else 204)

    def new_url(self, query: str = "?via=sandbox&n=1") -> str:
        """A URL of the test's own, with a query string the signature must cover."""
        return f"{self.base_url}/status/{uuid4().hex}{query}"

    def at(self, url: str) -> list[Callback]:
        return [callback for callback in self.received if callback.url == url]


@pytest.fixture(scope="session")
async def receiver() -> AsyncIterator[Receiver]:
    recorder = Receiver()
    async with serving(recorder.app) as base_url:
        recorder.base_url = base_url
        yield recorder


@pytest.fixture
def sandbox_app() -> FastAPI:
    return create_sandbox_app(SandboxConfig(callback_delay_seconds=STEP, hang_seconds=0.05))


@pytest.fixture
def sandbox(sandbox_app: FastAPI) -> Sandbox:
    state: Sandbox = sandbox_app.state.sandbox
    return state


@pytest.fixture
async def http(sandbox_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(sandbox_app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://sandbox", auth=(ACCOUNT, TOKEN)
        ) as client:
            yield client


@pytest.fixture
def twilio(http: httpx.AsyncClient, contract: Contract) -> TwilioApi:
    return TwilioApi(http, contract)


async def eventually(condition: Callable[[], bool | Awaitable[bool]], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while True:
        outcome = condition()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"not true within {within} s")
        await asyncio.sleep(0.005)


async def settled(sandbox: Sandbox) -> None:
    """Every timeline and callback has run its course."""
    await eventually(lambda: sandbox.delivery.pending == 0)


def assert_signed(callback: Callback, url: str) -> None:
    assert validate_signature(TOKEN, url, callback.params, callback.signature)
    assert not validate_signature("another-token", url, callback.params, callback.signature)


# --- Create -------------------------------------------------------------------------------


async def test_create_answers_a_queued_message_with_every_field(twilio: TwilioApi) -> None:
    response = await twilio.create(To=HANDSET, From=SENDER, Body="Your code is 123456")

    assert response.status_code == 201
    message = response.json()
    assert SID_PATTERN.match(message["sid"])
    assert message["status"] == "queued"
    assert (message["to"], message["from"], message["body"]) == (
        HANDSET,
        SENDER,
        "Your code is 123456",
    )
    assert message["account_sid"] == ACCOUNT
    assert message["num_segments"] == "1"
    assert message["num_media"] == "0"
    assert message["price"] is None
    assert message["price_unit"] == "USD"
    assert message["direction"] == "outbound-api"
    assert message["api_version"] == "2010-04-01"
    assert message["date_sent"] is None
    assert RFC2822.match(message["date_created"])
    assert message["date_updated"] == message["date_created"]
    assert message["error_code"] is None
    assert message["error_message"] is None
    assert message["messaging_service_sid"] is None
    assert message["uri"] == f"{BASE}/Messages/{message['sid']}.json"
    assert message["subresource_uris"] == {"media": f"{BASE}/Messages/{message['sid']}/Media.json"}


@pytest.mark.parametrize(
    ("body", "segments"),
    [("a" * 160, "1"), ("a" * 161, "2"), ("{" * 81, "2"), ("é" * 160, "1"), ("👍" * 36, "2")],
)
async def test_num_segments_is_counted_like_a_carrier(
    twilio: TwilioApi, body: str, segments: str
) -> None:
    assert (await twilio.send(body=body))["num_segments"] == segments


async def test_smart_encoding_replaces_look_alikes_before_counting(twilio: TwilioApi) -> None:
    # Typographic quotes and dash would make it UCS-2: three segments instead of one.
    body = "It\u2019s \u201cready\u201d \u2014 " + "a" * 140
    message = await twilio.send(body=body, SmartEncoded="true")

    assert message["body"] == 'It\'s "ready" - ' + "a" * 140
    assert message["num_segments"] == "1"


@pytest.mark.parametrize(
    ("sender", "code"), [("+15005550001", 21212), ("+15005550007", 21606), ("+15005550008", 21611)]
)
async def test_magic_senders_are_refused_and_nothing_is_stored(
    twilio: TwilioApi, http: httpx.AsyncClient, sender: str, code: int
) -> None:
    response = await twilio.create(To=HANDSET, From=sender, Body="Hello")

    assert response.status_code == 400
    assert response.json()["code"] == code
    assert (await http.get("/sandbox/messages")).json() == {"messages": []}
    assert (await http.get(f"/sandbox/inbox/{HANDSET}")).json()["messages"] == []


@pytest.mark.parametrize(
    ("to", "code"),
    [
        ("+15005550001", 21211),
        ("+15005550002", 21612),
        ("+15005550003", 21408),
        ("+15005550004", 21610),
        ("+15005550009", 21614),
    ],
)
async def test_magic_recipients_are_refused_and_nothing_is_stored(
    twilio: TwilioApi, http: httpx.AsyncClient, to: str, code: int
) -> None:
    response = await twilio.create(To=to, From=SENDER, Body="Hello")

    assert response.status_code == 400
    assert response.json()["code"] == code
    assert (await twilio.list()).json()["messages"] == []
    assert (await http.get(f"/sandbox/inbox/{to}")).json()["messages"] == []


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"To": HANDSET, "From": SENDER}, 21602),
        ({"To": HANDSET, "From": SENDER, "Body": ""}, 21602),
        ({"To": HANDSET, "Body": "Hello"}, 21603),
        ({"To": HANDSET, "From": SENDER, "Body": "a" * 1601}, 21617),
        ({"To": "4155552671", "From": SENDER, "Body": "Hello"}, 21211),
        ({"To": "+0155552671", "From": SENDER, "Body": "Hello"}, 21211),
        ({"To": "+1415", "From": SENDER, "Body": "Hello"}, 21211),
        ({"To": "whatsapp:+14155552671", "From": SENDER, "Body": "Hello"}, 21211),
        ({"To": HANDSET, "MessagingServiceSid": "MG123", "Body": "Hello"}, 21701),
        ({"To": HANDSET, "From": SENDER, "Body": "Hi", "StatusCallback": "ftp://x/y"}, 21609),
    ],
)
async def test_invalid_requests_are_refused_with_twilio_codes(
    twilio: TwilioApi, form: dict[str, str], code: int
) -> None:
    # MG123 breaks the description's pattern: the request itself is not valid there.
    response = await twilio.create(request_valid=code != 21701, **form)

    assert response.status_code == 400
    assert response.json()["code"] == code
    assert (await twilio.list()).json()["messages"] == []


async def test_a_body_of_1600_characters_is_accepted(twilio: TwilioApi) -> None:
    assert (await twilio.send(body="a" * 1600))["num_segments"] == "11"


async def test_a_missing_to_is_refused(twilio: TwilioApi) -> None:
    response = await twilio.create(request_valid=False, From=SENDER, Body="Hello")

    assert response.status_code == 400
    assert response.json()["code"] == 21604


# --- Auth and unknown resources -----------------------------------------------------------


@pytest.mark.parametrize(
    ("path_account", "auth"),
    [
        (ACCOUNT, (ACCOUNT, "wrong-token")),
        (ACCOUNT, ("AC" + "00" * 16, TOKEN)),
        (ACCOUNT, (ACCOUNT.lower(), TOKEN)),
        ("AC" + "11" * 16, ("AC" + "11" * 16, TOKEN)),
        ("AC" + "11" * 16, (ACCOUNT, TOKEN)),
    ],
)
async def test_wrong_credentials_are_refused_with_20003(
    http: httpx.AsyncClient, contract: Contract, path_account: str, auth: tuple[str, str]
) -> None:
    for response in (
        await http.post(
            f"/2010-04-01/Accounts/{path_account}/Messages.json",
            data={"To": HANDSET, "From": SENDER, "Body": "Hello"},
            auth=auth,
        ),
        await http.get(f"/2010-04-01/Accounts/{path_account}/Messages.json", auth=auth),
    ):
        contract.check(response)
        assert response.status_code == 401
        assert response.json() == {
            "code": 20003,
            "message": "Authenticate",
            "more_info": "https://www.twilio.com/docs/errors/20003",
            "status": 401,
        }
        assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert (await http.get("/sandbox/messages")).json() == {"messages": []}


@pytest.mark.parametrize("header", [None, "Bearer abc", "Basic !!!not-base64", "Basic " + "Og=="])
async def test_missing_or_malformed_credentials_are_refused(
    sandbox_app: FastAPI, contract: Contract, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox_app), base_url="http://sandbox"
    ) as anonymous:
        response = await anonymous.get(f"{BASE}/Messages.json", headers=headers)

    contract.check(response, request_valid=False)
    assert response.status_code == 401
    assert response.json()["code"] == 20003


async def test_unknown_sids_answer_20404(twilio: TwilioApi) -> None:
    sid = "SM" + "0" * 32
    for response in (
        await twilio.fetch(sid),
        await twilio.update(sid, Body=""),
        await twilio.delete(sid),
    ):
        assert response.status_code == 404
        assert response.json()["code"] == 20404
        assert sid in response.json()["message"]


async def test_unknown_paths_and_methods_answer_in_twilio_shape(http: httpx.AsyncClient) -> None:
    missing = await http.get(f"{BASE}/Calls.json")
    assert missing.status_code == 404
    assert missing.json()["code"] == 20404

    not_allowed = await http.put(f"{BASE}/Messages.json")
    assert not_allowed.status_code == 405
    assert not_allowed.json()["code"] == 20004


# --- The carrier and its callbacks --------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "final", "error_code"),
    [
        (HANDSET, "delivered", None),
        ("+15005550020", "undelivered", 30003),
        ("+15005550021", "failed", 30008),
    ],
)
async def test_a_message_is_sent_then_ends_with_signed_callbacks_for_each_status(
    twilio: TwilioApi, receiver: Receiver, to: str, final: str, error_code: int | None
) -> None:
    url = receiver.new_url()
    created = await twilio.send(to=to, body="x" * 200, StatusCallback=url)  # two segments

    await eventually(lambda: len(receiver.at(url)) == 2)
    sent, last = receiver.at(url)
    assert (sent.status, last.status) == ("sent", final)
    for callback in (sent, last):
        assert_signed(callback, url)
        form = callback.form
        assert form["MessageSid"] == form["SmsSid"] == created["sid"]
        assert form["SmsStatus"] == form["MessageStatus"]
        assert form["AccountSid"] == ACCOUNT
        assert (form["From"], form["To"], form["ApiVersion"]) == (SENDER, to, "2010-04-01")
    assert "ErrorCode" not in sent.form
    assert "RawDlrDoneDate" not in sent.form
    assert last.form.get("ErrorCode") == (str(error_code) if error_code else None)
    if final in ("delivered", "undelivered"):
        assert re.fullmatch(r"\d{10}", last.form["RawDlrDoneDate"])
    else:
        assert "RawDlrDoneDate" not in last.form

    message = (await twilio.fetch(created["sid"])).json()
    assert message["status"] == final
    assert message["error_code"] == error_code
    assert (message["error_message"] is None) == (error_code is None)
    assert message["price"] == "-0.01580"
    assert message["price_unit"] == "USD"
    assert RFC2822.match(message["date_sent"])


async def test_the_never_final_number_stays_sent(
    twilio: TwilioApi, sandbox: Sandbox, receiver: Receiver
) -> None:
    url = receiver.new_url()
    created = await twilio.send(to="+15005550022", StatusCallback=url)

    await settled(sandbox)
    assert [callback.status for callback in receiver.at(url)] == ["sent"]
    message = (await twilio.fetch(created["sid"])).json()
    assert message["status"] == "sent"
    assert message["price"] is None
    assert message["date_sent"] is not None


async def test_status_moves_from_queued_to_sent_to_delivered(twilio: TwilioApi) -> None:
    created = await twilio.send()
    seen = [created["status"]]

    async def delivered() -> bool:
        status = await twilio.status(created["sid"])
        if status != seen[-1]:
            seen.append(status)
        return status == "delivered"

    await eventually(delivered)
    assert seen[0] == "queued"
    assert seen[-1] == "delivered"
    assert set(seen) <= {"queued", "sent", "delivered"}


async def test_a_messaging_service_message_is_accepted_and_gets_a_sender(
    twilio: TwilioApi, receiver: Receiver
) -> None:
    url = receiver.new_url(query="")
    service = "MG" + "ab" * 16
    response = await twilio.create(
        To=HANDSET, MessagingServiceSid=service, Body="Hello", StatusCallback=url
    )

    assert response.status_code == 201
    created = response.json()
    assert (created["status"], created["from"]) == ("accepted", None)
    assert created["messaging_service_sid"] == service
    await eventually(lambda: len(receiver.at(url)) == 2)
    for callback in receiver.at(url):
        assert_signed(callback, url)
        assert callback.form["MessagingServiceSid"] == service
        assert callback.form["From"] == SENDER
    assert (await twilio.fetch(created["sid"])).json()["from"] == SENDER


async def test_a_message_without_a_status_callback_is_delivered_quietly(
    twilio: TwilioApi, sandbox: Sandbox
) -> None:
    created = await twilio.send()

    await settled(sandbox)
    assert await twilio.status(created["sid"]) == "delivered"


async def test_callback_failures_are_logged_and_dropped(
    twilio: TwilioApi, sandbox: Sandbox, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    failing = f"{receiver.base_url}/fail/{uuid4().hex}"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    unreachable = f"http://127.0.0.1:{closed_port}/status"
    caplog.set_level(logging.WARNING, logger="app.twilio_sandbox.callbacks")

    first = await twilio.send(StatusCallback=failing)
    second = await twilio.send(StatusCallback=unreachable)
    await settled(sandbox)

    assert [callback.status for callback in receiver.at(failing)] == ["sent", "delivered"]
    assert await twilio.status(first["sid"]) == "delivered"
    assert await twilio.status(second["sid"]) == "delivered"
    logged = [record.getMessage() for record in caplog.records]
    assert sum("answered 500" in line for line in logged) == 2
    assert sum("failed" in line and second["sid"] in line for line in logged) == 2


# --- Scheduling, cancel, redact, delete ---------------------------------------------------


def _in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


SERVICE = "MG" + "cd" * 16


async def test_a_scheduled_message_waits_and_can_be_canceled(
    twilio: TwilioApi, receiver: Receiver
) -> None:
    url = receiver.new_url()
    response = await twilio.create(
        To=HANDSET,
        MessagingServiceSid=SERVICE,
        Body="Reminder",
        SendAt=_in(3600),
        ScheduleType="fixed",
        StatusCallback=url,
    )
    assert response.status_code == 201
    scheduled = response.json()
    assert scheduled["status"] == "scheduled"
    assert scheduled["date_sent"] is None

    # Another message goes all the way while the scheduled one still waits.
    other = await twilio.send()
    await twilio.reaches(other["sid"], "delivered")
    assert await twilio.status(scheduled["sid"]) == "scheduled"
    assert receiver.at(url) == []

    canceled = await twilio.update(scheduled["sid"], Status="canceled")
    assert canceled.status_code == 200
    assert canceled.json()["status"] == "canceled"
    await eventually(lambda: len(receiver.at(url)) == 1)
    callback = receiver.at(url)[0]
    assert callback.status == "canceled"
    assert_signed(callback, url)

    again = await twilio.update(scheduled["sid"], Status="canceled")
    assert again.status_code == 400
    assert again.json()["code"] == 30409
    assert await twilio.status(scheduled["sid"]) == "canceled"


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"From": SENDER, "SendAt": _in(3600), "ScheduleType": "fixed"}, 35111),
        ({"MessagingServiceSid": SERVICE, "ScheduleType": "fixed"}, 35111),
        ({"MessagingServiceSid": SERVICE, "SendAt": _in(3600)}, 35111),
        ({"MessagingServiceSid": SERVICE, "SendAt": _in(120), "ScheduleType": "fixed"}, 35114),
        (
            {"MessagingServiceSid": SERVICE, "SendAt": _in(36 * 86400), "ScheduleType": "fixed"},
            35114,
        ),
        ({"MessagingServiceSid": SERVICE, "SendAt": _in(-60), "ScheduleType": "fixed"}, 35114),
        ({"MessagingServiceSid": SERVICE, "SendAt": "tomorrow", "ScheduleType": "fixed"}, 35114),
    ],
)
async def test_scheduling_needs_a_service_and_a_time_300s_to_35_days_ahead(
    twilio: TwilioApi, form: dict[str, str], code: int
) -> None:
    # "tomorrow" is no date-time: the description refuses that request itself.
    response = await twilio.create(
        request_valid=form.get("SendAt") != "tomorrow", To=HANDSET, Body="Later", **form
    )

    assert response.status_code == 400
    assert response.json()["code"] == code
    assert (await twilio.list()).json()["messages"] == []


async def test_a_scheduled_message_goes_out_at_its_send_time(receiver: Receiver) -> None:
    # Through the carrier directly: the API only takes times five minutes ahead.
    url = receiver.new_url()
    sender = CallbackSender(TOKEN, timeout_seconds=5)
    delivery = Delivery(price_per_segment="-0.00790", dice=FaultDice(), sender=sender)
    now = datetime.now(UTC)
    send_at = now + timedelta(seconds=0.15)
    message = SandboxMessage(
        sid=new_message_sid(),
        seq=1,
        account_sid=ACCOUNT,
        to=HANDSET,
        from_=None,
        messaging_service_sid=SERVICE,
        body="Later",
        num_segments=1,
        status=Status.SCHEDULED,
        date_created=now,
        date_updated=now,
        send_at=send_at,
        status_callback=url,
    )
    try:
        delivery.start(message, DeliveryPlan(step_seconds=0.01))
        await eventually(lambda: delivery.pending == 0)  # the last callback is out too
    finally:
        await delivery.reset()
        await sender.aclose()

    assert message.status == Status.DELIVERED
    assert message.date_sent is not None
    assert message.date_sent >= send_at
    assert [callback.status for callback in receiver.at(url)] == ["sent", "delivered"]
    assert message.price == "-0.00790"


async def test_callbacks_queued_behind_busy_connections_are_not_timed_out(
    receiver: Receiver,
) -> None:
    """Twilio queues its callbacks: the timeout counts from the connection on. One connection,
    each answer taking 0.2 s, a 0.3 s timeout: the third waits 0.4 s for the connection and
    still goes."""
    sender = CallbackSender(TOKEN, timeout_seconds=0.3, max_in_flight=1)
    url = f"{receiver.base_url}/slow/{uuid4().hex}"
    try:
        await asyncio.gather(
            *(sender.send(url, {"MessageSid": f"SM{n}", "MessageStatus": "sent"}) for n in range(3))
        )
    finally:
        await sender.aclose()

    assert sorted(callback.params for callback in receiver.at(url)) == [
        [("MessageSid", f"SM{n}"), ("MessageStatus", "sent")] for n in range(3)
    ]


async def test_only_scheduled_messages_can_be_canceled(twilio: TwilioApi) -> None:
    created = await twilio.send()

    response = await twilio.update(created["sid"], Status="canceled")

    assert response.status_code == 400
    assert response.json() == {
        "code": 30409,
        "message": "Message cannot be canceled",
        "more_info": "https://www.twilio.com/docs/errors/30409",
        "status": 400,
    }
    await twilio.reaches(created["sid"], "delivered")


async def test_a_final_message_can_be_redacted_but_the_handset_keeps_the_text(
    twilio: TwilioApi, http: httpx.AsyncClient
) -> None:
    created = await twilio.send(body="Your code is 987654")
    await twilio.reaches(created["sid"], "delivered")

    response = await twilio.update(created["sid"], Body="")

    assert response.status_code == 200
    assert response.json()["body"] == ""
    assert response.json()["status"] == "delivered"
    assert (await twilio.fetch(created["sid"])).json()["body"] == ""
    inbox = (await http.get(f"/sandbox/inbox/{HANDSET}")).json()
    assert inbox["messages"][0]["body"] == "Your code is 987654"


@pytest.mark.parametrize(
    ("form", "request_valid"),
    [({"Body": ""}, True), ({"Body": "other text"}, True), ({}, True), ({"Status": "sent"}, False)],
)
async def test_updates_other_than_cancel_and_redact_of_a_final_message_are_refused(
    twilio: TwilioApi, form: dict[str, str], request_valid: bool
) -> None:
    created = await twilio.send(to="+15005550022")  # stays sent: never final
    await twilio.reaches(created["sid"], "sent")

    response = await twilio.update(created["sid"], request_valid=request_valid, **form)

    assert response.status_code == 400
    assert response.json()["code"] == 30400
    assert (await twilio.fetch(created["sid"])).json()["body"] == "Hello"


async def test_redact_and_cancel_at_once_are_refused(twilio: TwilioApi) -> None:
    created = await twilio.send()

    response = await twilio.update(created["sid"], Body="", Status="canceled")

    assert response.status_code == 400
    assert response.json()["code"] == 30400


async def test_a_deleted_message_is_gone(twilio: TwilioApi) -> None:
    created = await twilio.send()
    await twilio.reaches(created["sid"], "delivered")

    response = await twilio.delete(created["sid"])

    assert response.status_code == 204
    assert response.content == b""
    assert (await twilio.fetch(created["sid"])).status_code == 404
    assert (await twilio.list()).json()["messages"] == []
    assert (await twilio.delete(created["sid"])).status_code == 404


# --- List ---------------------------------------------------------------------------------


async def test_list_is_newest_first_and_filters_by_to_and_from(twilio: TwilioApi) -> None:
    other = "+14155550100"
    first = await twilio.send(to=HANDSET)
    second = await twilio.send(to=other)
    third = await twilio.send(to=HANDSET, From="+14155550999")

    everything = (await twilio.list()).json()
    assert [m["sid"] for m in everything["messages"]] == [third["sid"], second["sid"], first["sid"]]
    assert everything["page"] == 0
    assert everything["page_size"] == 50
    assert (everything["start"], everything["end"]) == (0, 2)
    assert everything["next_page_uri"] is None
    assert everything["previous_page_uri"] is None
    assert everything["uri"] == f"{BASE}/Messages.json?PageSize=50&Page=0"
    assert everything["first_page_uri"] == everything["uri"]

    to_handset = (await twilio.list({"To": HANDSET})).json()
    assert [m["sid"] for m in to_handset["messages"]] == [third["sid"], first["sid"]]
    assert to_handset["uri"] == f"{BASE}/Messages.json?To=%2B14155552671&PageSize=50&Page=0"
    from_sender = (await twilio.list({"From": SENDER})).json()
    assert [m["sid"] for m in from_sender["messages"]] == [second["sid"], first["sid"]]
    both = (await twilio.list({"To": HANDSET, "From": SENDER})).json()
    assert [m["sid"] for m in both["messages"]] == [first["sid"]]
    assert (await twilio.list({"To": "+14155550101"})).json()["messages"] == []


async def test_list_filters_by_date_sent(twilio: TwilioApi) -> None:
    sent = await twilio.send()
    await twilio.reaches(sent["sid"], "delivered")
    # Not sent yet: it counts by its creation date.
    scheduled = await twilio.send(
        MessagingServiceSid=SERVICE, SendAt=_in(3600), ScheduleType="fixed", From=""
    )
    both = {sent["sid"], scheduled["sid"]}
    now = datetime.now(UTC)
    today, day = now.date(), timedelta(days=1)

    def moment(delta: timedelta) -> str:
        return (now + delta).strftime("%Y-%m-%dT%H:%M:%SZ")

    cases: list[tuple[dict[str, str], set[str], bool]] = [
        # (query, expected sids, is the request valid for the description)
        ({"DateSent>": moment(-timedelta(hours=1))}, both, True),
        ({"DateSent>": moment(timedelta(hours=1))}, set(), True),
        ({"DateSent<": moment(timedelta(hours=1))}, both, True),
        ({"DateSent<": moment(-timedelta(hours=1))}, set(), True),
        ({"DateSent": str(today)}, both, False),
        ({"DateSent": str(today - day)}, set(), False),
        ({"DateSent>": str(today)}, both, False),
        ({"DateSent>": str(today + day)}, set(), False),
        ({"DateSent<": str(today)}, both, False),
        ({"DateSent<": str(today - day)}, set(), False),
        ({"DateSent>": str(today - day), "DateSent<": str(today + day)}, both, False),
    ]
    for query, expected, valid in cases:
        answer = (await twilio.list(query, request_valid=valid)).json()
        assert {m["sid"] for m in answer["messages"]} == expected, query

    # As Twilio's helpers write it: `DateSent>=YYYY-MM-DD` in the URL.
    raw = await twilio.list(url=f"{BASE}/Messages.json?DateSent>={today}", request_valid=False)
    assert {m["sid"] for m in raw.json()["messages"]} == both
    assert "DateSent%3E=" in raw.json()["uri"]


@pytest.mark.parametrize(
    "params",
    [
        {"PageSize": "0"},
        {"PageSize": "1001"},
        {"PageSize": "ten"},
        {"Page": "-1"},
        {"DateSent": "yesterday"},
        {"DateSent>": "not a date"},
        {"PageToken": "garbage"},
    ],
)
async def test_bad_list_parameters_are_refused(twilio: TwilioApi, params: dict[str, str]) -> None:
    response = await twilio.list(params, request_valid=False)

    assert response.status_code == 400
    assert response.json()["code"] == 20001


async def test_pages_follow_next_page_uri_stably_while_messages_arrive(twilio: TwilioApi) -> None:
    sids = [(await twilio.send(body=f"message {n}"))["sid"] for n in range(5)]
    await twilio.send(to="+14155550100")  # another number: filtered out
    newest_first = sids[::-1]

    first = (await twilio.list({"To": HANDSET, "PageSize": "2"})).json()
    assert [m["sid"] for m in first["messages"]] == newest_first[:2]
    assert (first["page"], first["page_size"], first["start"], first["end"]) == (0, 2, 0, 1)
    assert first["previous_page_uri"] is None
    assert first["next_page_uri"].startswith(f"{BASE}/Messages.json?To=%2B14155552671&PageSize=2")

    late = await twilio.send(body="arrives while paging")
    second = (await twilio.list(url=first["next_page_uri"])).json()
    assert [m["sid"] for m in second["messages"]] == newest_first[2:4]
    assert (second["page"], second["start"], second["end"]) == (1, 2, 3)
    assert second["uri"] == first["next_page_uri"]
    third = (await twilio.list(url=second["next_page_uri"])).json()
    assert [m["sid"] for m in third["messages"]] == newest_first[4:]
    assert third["next_page_uri"] is None
    assert third["first_page_uri"] == first["first_page_uri"]

    back = (await twilio.list(url=third["previous_page_uri"])).json()
    assert [m["sid"] for m in back["messages"]] == newest_first[2:4]
    front = (await twilio.list(url=back["previous_page_uri"])).json()
    assert [m["sid"] for m in front["messages"]] == newest_first[:2]
    assert front["previous_page_uri"] is not None  # the late message is newer still
    fresh = (await twilio.list(url=first["first_page_uri"])).json()
    assert [m["sid"] for m in fresh["messages"]] == [late["sid"], newest_first[0]]

    by_number = (await twilio.list({"To": HANDSET, "PageSize": "2", "Page": "2"})).json()
    assert [m["sid"] for m in by_number["messages"]] == newest_first[3:5]


# --- Inbox, sandbox messages, reset -------------------------------------------------------


async def test_the_inbox_shows_what_a_number_received_oldest_first(
    twilio: TwilioApi, http: httpx.AsyncClient
) -> None:
    first = await twilio.send(body="first")
    second = await twilio.send(body="second " + "ê" * 70)
    await twilio.send(to="+14155550100", body="elsewhere")
    await twilio.reaches(second["sid"], "delivered")

    inbox = (await http.get(f"/sandbox/inbox/{HANDSET}")).json()

    assert inbox["number"] == HANDSET
    assert [m["sid"] for m in inbox["messages"]] == [first["sid"], second["sid"]]
    entry = inbox["messages"][1]
    assert set(entry) == {"sid", "from", "to", "body", "status", "num_segments", "date_created"}
    assert (entry["from"], entry["to"], entry["body"]) == (SENDER, HANDSET, "second " + "ê" * 70)
    assert (entry["status"], entry["num_segments"]) == ("delivered", 2)
    assert datetime.fromisoformat(entry["date_created"]).tzinfo is not None
    empty = (await http.get("/sandbox/inbox/+14155550199")).json()
    assert empty == {"number": "+14155550199", "messages": []}


async def test_sandbox_messages_lists_everything_and_reset_forgets_it(
    twilio: TwilioApi, http: httpx.AsyncClient, sandbox: Sandbox, receiver: Receiver
) -> None:
    url = receiver.new_url()
    await http.put("/sandbox/faults", json={"latency_ms": 1, "callback_delay_ms": 10_000})
    waiting = await twilio.send(StatusCallback=url)
    other = await twilio.send(to="+14155550100")

    listed = (await http.get("/sandbox/messages")).json()["messages"]
    assert [m["sid"] for m in listed] == [waiting["sid"], other["sid"]]
    assert listed[0]["status_callback"] == url
    assert sandbox.delivery.pending == 2

    assert (await http.post("/sandbox/reset")).status_code == 204

    assert sandbox.delivery.pending == 0
    assert (await http.get("/sandbox/messages")).json() == {"messages": []}
    assert (await http.get(f"/sandbox/inbox/{HANDSET}")).json()["messages"] == []
    assert (await http.get("/sandbox/faults")).json()["latency_ms"] == 0
    assert (await twilio.list()).json()["messages"] == []
    assert receiver.at(url) == []


# --- Fault knobs --------------------------------------------------------------------------

DEFAULT_FAULTS = {
    "latency_ms": 0,
    "slow_rate": 0.0,
    "slow_ms": 0,
    "rate_429": 0.0,
    "rate_5xx": 0.0,
    "rate_5xx_after_accept": 0.0,
    "timeout_rate": 0.0,
    "callback_delay_ms": None,
    "drop_callbacks": 0.0,
    "duplicate_callbacks": 0.0,
    "hold_callbacks": 0.0,
    "out_of_order_callbacks": False,
}


async def set_faults(http: httpx.AsyncClient, **knobs: object) -> None:
    response = await http.put("/sandbox/faults", json=knobs)
    assert response.status_code == 200, response.text


async def test_faults_are_read_and_replaced(http: httpx.AsyncClient) -> None:
    assert (await http.get("/sandbox/faults")).json() == DEFAULT_FAULTS

    put = await http.put("/sandbox/faults", json={"rate_429": 0.25, "out_of_order_callbacks": True})
    assert put.json() == {**DEFAULT_FAULTS, "rate_429": 0.25, "out_of_order_callbacks": True}
    assert (await http.get("/sandbox/faults")).json() == put.json()

    # PUT replaces: what is left out goes back to its default.
    await set_faults(http, latency_ms=5)
    assert (await http.get("/sandbox/faults")).json() == {**DEFAULT_FAULTS, "latency_ms": 5}


@pytest.mark.parametrize(
    "knobs",
    [{"rate_429": 1.5}, {"drop_callbacks": -0.1}, {"latency_ms": -1}, {"no_such_knob": 1}],
)
async def test_invalid_faults_are_refused(
    http: httpx.AsyncClient, knobs: dict[str, object]
) -> None:
    response = await http.put("/sandbox/faults", json=knobs)

    assert response.status_code == 422
    assert (await http.get("/sandbox/faults")).json() == DEFAULT_FAULTS


async def test_latency_is_added_to_every_api_request(
    twilio: TwilioApi, http: httpx.AsyncClient
) -> None:
    created = await twilio.send()
    await set_faults(http, latency_ms=120)

    for request in (lambda: twilio.fetch(created["sid"]), lambda: twilio.list(), twilio.send):
        started = time.monotonic()
        await request()
        assert time.monotonic() - started >= 0.12


async def test_rate_429_refuses_before_anything_is_stored(
    twilio: TwilioApi, http: httpx.AsyncClient
) -> None:
    await set_faults(http, rate_429=1.0)

    response = await twilio.create(To=HANDSET, From=SENDER, Body="Hello")

    assert response.status_code == 429
    assert response.json()["code"] == 20429
    assert (await http.get("/sandbox/messages")).json() == {"messages": []}
    assert (await twilio.list()).status_code == 200  # knobs apply to creation only


async def test_rate_5xx_fails_before_anything_is_stored(
    twilio: TwilioApi, http: httpx.AsyncClient
) -> None:
    await set_faults(http, rate_5xx=1.0, seed=3)

    answers = {
        (
            (r := await twilio.create(To=HANDSET, From=SENDER, Body="Hi")).status_code,
            r.json()["code"],
        )
        for _ in range(12)
    }

    assert answers == {(500, 20500), (503, 20503)}
    assert (await http.get("/sandbox/messages")).json() == {"messages": []}


async def test_5xx_after_accept_stores_and_delivers_the_message(
    twilio: TwilioApi, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    url = receiver.new_url()
    await set_faults(http, rate_5xx_after_accept=1.0)

    response = await twilio.create(To=HANDSET, From=SENDER, Body="Hello", StatusCallback=url)

    assert response.status_code == 500
    assert response.json()["code"] == 20500
    # The client cannot tell; the list endpoint can.
    found = (await twilio.list({"To": HANDSET})).json()["messages"]
    assert len(found) == 1
    await twilio.reaches(found[0]["sid"], "delivered")
    await eventually(lambda: [c.status for c in receiver.at(url)] == ["sent", "delivered"])
    assert len((await http.get(f"/sandbox/inbox/{HANDSET}")).json()["messages"]) == 1


async def test_timeout_rate_stores_the_message_and_holds_the_answer(
    twilio: TwilioApi, http: httpx.AsyncClient
) -> None:
    await set_faults(http, timeout_rate=1.0)

    started = time.monotonic()
    response = await twilio.create(To=HANDSET, From=SENDER, Body="Hello")

    assert time.monotonic() - started >= 0.05  # hang_seconds of the fixture
    assert response.status_code == 201


async def test_a_timeout_leaves_the_client_without_an_answer_but_the_message_is_sent(
    contract: Contract,
) -> None:
    app = create_sandbox_app(SandboxConfig(callback_delay_seconds=STEP, hang_seconds=0.5))
    async with (
        serving(app) as base_url,
        httpx.AsyncClient(base_url=base_url, auth=(ACCOUNT, TOKEN)) as client,
    ):
        await set_faults(client, timeout_rate=1.0)
        with pytest.raises(httpx.ReadTimeout):
            await client.post(
                f"{BASE}/Messages.json",
                data={"To": HANDSET, "From": SENDER, "Body": "Hello"},
                timeout=0.1,
            )
        await set_faults(client)
        twilio = TwilioApi(client, contract)
        found = (await twilio.list({"To": HANDSET})).json()["messages"]
        assert len(found) == 1
        await twilio.reaches(found[0]["sid"], "delivered")


async def test_dropped_callbacks_are_never_sent(
    twilio: TwilioApi, http: httpx.AsyncClient, sandbox: Sandbox, receiver: Receiver
) -> None:
    url = receiver.new_url()
    await set_faults(http, drop_callbacks=1.0)

    created = await twilio.send(StatusCallback=url)
    await settled(sandbox)

    assert await twilio.status(created["sid"]) == "delivered"
    assert receiver.at(url) == []


async def test_duplicate_callbacks_are_sent_twice(
    twilio: TwilioApi, http: httpx.AsyncClient, sandbox: Sandbox, receiver: Receiver
) -> None:
    url = receiver.new_url()
    await set_faults(http, duplicate_callbacks=1.0)

    await twilio.send(to="+15005550020", StatusCallback=url)
    await settled(sandbox)

    callbacks = receiver.at(url)
    assert [c.status for c in callbacks] == ["sent", "sent", "undelivered", "undelivered"]
    assert callbacks[0].params == callbacks[1].params
    assert callbacks[2].params == callbacks[3].params
    for callback in callbacks:
        assert_signed(callback, url)


async def test_out_of_order_callbacks_bring_the_final_status_first(
    twilio: TwilioApi, http: httpx.AsyncClient, sandbox: Sandbox, receiver: Receiver
) -> None:
    url = receiver.new_url()
    await set_faults(http, out_of_order_callbacks=True)

    created = await twilio.send(StatusCallback=url)
    await settled(sandbox)

    callbacks = receiver.at(url)
    assert [c.status for c in callbacks] == ["delivered", "sent"]
    for callback in callbacks:
        assert_signed(callback, url)
    assert await twilio.status(created["sid"]) == "delivered"


async def test_held_callbacks_come_when_released_newest_first(
    twilio: TwilioApi, http: httpx.AsyncClient, sandbox: Sandbox, receiver: Receiver
) -> None:
    url = receiver.new_url()
    await set_faults(http, hold_callbacks=1.0)

    created = await twilio.send(StatusCallback=url)
    await settled(sandbox)
    assert await twilio.status(created["sid"]) == "delivered"
    assert receiver.at(url) == []

    released = await http.post("/sandbox/callbacks/release")

    assert released.json() == {"released": 2}
    callbacks = receiver.at(url)
    assert [c.status for c in callbacks] == ["delivered", "sent"]
    for callback in callbacks:
        assert_signed(callback, url)
    assert (await http.post("/sandbox/callbacks/release")).json() == {"released": 0}


async def test_slow_answers_come_late_and_the_rest_do_not(
    twilio: TwilioApi, http: httpx.AsyncClient
) -> None:
    await set_faults(http, slow_rate=1.0, slow_ms=300)
    started = time.monotonic()
    await twilio.send()
    slow = time.monotonic() - started
    await set_faults(http, slow_rate=0.0, slow_ms=300)
    started = time.monotonic()
    await twilio.send()
    quick = time.monotonic() - started

    assert slow >= 0.3 > quick


async def test_callback_delay_ms_overrides_the_configured_delay(
    twilio: TwilioApi, http: httpx.AsyncClient
) -> None:
    await set_faults(http, callback_delay_ms=400)
    started = time.monotonic()
    slow = await twilio.send()
    await set_faults(http)  # knobs are read when a message is created
    quick = await twilio.send()

    await twilio.reaches(quick["sid"], "delivered")
    assert await twilio.status(slow["sid"]) == "queued"
    await twilio.reaches(slow["sid"], "delivered")
    assert time.monotonic() - started >= 0.8


async def test_a_seed_makes_the_dice_repeat(twilio: TwilioApi, http: httpx.AsyncClient) -> None:
    async def run() -> list[int]:
        await http.post("/sandbox/reset")
        await set_faults(http, rate_429=0.5, seed=1234)
        return [
            (await twilio.create(To=HANDSET, From=SENDER, Body="Hi")).status_code for _ in range(16)
        ]

    first, second = await run(), await run()

    assert first == second
    assert set(first) == {201, 429}
    stored = (await http.get("/sandbox/messages")).json()["messages"]
    assert len(stored) == first.count(201)


# --- Serving: lifespan, mounted, its own process ------------------------------------------


async def test_shutdown_cancels_what_is_in_flight(sandbox_app: FastAPI, sandbox: Sandbox) -> None:
    async with (
        LifespanManager(sandbox_app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app),
            base_url="http://sandbox",
            auth=(ACCOUNT, TOKEN),
        ) as client,
    ):
        await client.post(
            f"{BASE}/Messages.json",
            data={
                "To": HANDSET,
                "MessagingServiceSid": SERVICE,
                "Body": "Later",
                "SendAt": _in(3600),
                "ScheduleType": "fixed",
            },
        )
        assert sandbox.delivery.pending == 1

    assert sandbox.delivery.pending == 0


async def test_mounted_in_another_app_it_serves_and_calls_back(
    contract: Contract, receiver: Receiver
) -> None:
    twilio_sandbox = create_sandbox_app(SandboxConfig(callback_delay_seconds=STEP))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with twilio_sandbox.router.lifespan_context(twilio_sandbox):
            yield

    parent = FastAPI(lifespan=lifespan)
    parent.mount("/twilio-sandbox", twilio_sandbox)
    url = receiver.new_url()
    async with (
        LifespanManager(parent) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app),
            base_url="http://service/twilio-sandbox",
            auth=(ACCOUNT, TOKEN),
        ) as client,
    ):
        response = await client.post(
            f"{BASE}/Messages.json",
            data={"To": HANDSET, "From": SENDER, "Body": "Hi", "StatusCallback": url},
        )
        assert response.status_code == 201
        assert response.json()["uri"].startswith(BASE)
        await eventually(lambda: len(receiver.at(url)) == 2)
        inbox = (await client.get(f"/sandbox/inbox/{HANDSET}")).json()
        assert inbox["messages"][0]["sid"] == response.json()["sid"]


@pytest.fixture
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def sandbox_process(free_port: int) -> Iterator[str]:
    process = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
        [
            sys.executable,
            "-m",
            "app.twilio_sandbox",
            "--port",
            str(free_port),
            "--callback-delay",
            "0.01",
            "--log-level",
            "warning",
        ],
        cwd=PROJECT,
    )
    try:
        yield f"http://127.0.0.1:{free_port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def test_python_m_serves_the_sandbox(sandbox_process: str, contract: Contract) -> None:
    async with httpx.AsyncClient(base_url=sandbox_process, auth=(ACCOUNT, TOKEN)) as client:

        async def up() -> bool:
            try:
                return (await client.get("/sandbox/faults")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(up, within=20)
        assert (await client.get("/sandbox/faults")).json() == DEFAULT_FAULTS
        twilio = TwilioApi(client, contract)
        created = await twilio.send()
        await twilio.reaches(created["sid"], "delivered")
