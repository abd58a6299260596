"""The Twilio client: requests it builds, answers it parses, and every error sorted by remedy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import respx
from openapi_core.testing import MockResponse

from app.core.settings import TwilioAccount
from app.twilio.client import TwilioClient
from app.twilio.errors import (
    TwilioAmbiguousError,
    TwilioConfigurationError,
    TwilioError,
    TwilioNotFound,
    TwilioPermanentError,
    TwilioRetryableError,
)
from app.twilio.schemas import NewMessage
from tests.twilio_contract import (
    MESSAGE,
    MESSAGES,
    example,
    openapi_request,
    twilio_openapi,
)

ACCOUNT = TwilioAccount(
    account_sid="AC" + "a1" * 16,
    username="AC" + "a1" * 16,
    password="token",
    auth_token="token",
    base_url="https://api.twilio.com",
    from_number="+15005550006",
    messaging_service_sid=None,
)
BASE = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT.account_sid}"
SID = "SM" + "b2" * 16


def resource(**changes: Any) -> dict[str, Any]:
    return {**example(MESSAGES, "post", "201", "create"), "sid": SID, **changes}


@pytest.fixture
async def client() -> AsyncIterator[TwilioClient]:
    twilio = TwilioClient(ACCOUNT, timeout_seconds=2, transport=httpx.AsyncHTTPTransport())
    yield twilio
    await twilio.aclose()


def check_contract(request: httpx.Request, response: httpx.Response) -> None:
    """The request validates against Twilio's OpenAPI description, and so does the answer."""
    openapi = openapi_request(request)
    twilio_openapi().validate_request(openapi)
    twilio_openapi().validate_response(
        openapi,
        MockResponse(response.content, status_code=response.status_code),
    )


@respx.mock
async def test_create_sends_a_valid_request_and_parses_the_answer(client: TwilioClient) -> None:
    answer = resource(
        status="queued", num_segments="2", date_created="Thu, 24 Aug 2023 05:01:45 +0000"
    )
    route = respx.post(f"{BASE}/Messages.json").respond(201, json=answer)

    message = await client.create_message(
        NewMessage(
            to="+14155552671",
            body="Your booking is confirmed",
            from_number="+15005550006",
            status_callback="https://sms.example.com/api/sms/webhook",
            validity_period=600,
            smart_encoded=True,
        )
    )

    assert message.sid == SID
    assert message.status == "queued"
    assert message.num_segments == 2
    assert message.date_created == datetime(2023, 8, 24, 5, 1, 45, tzinfo=UTC)
    sent = route.calls.last.request
    assert dict(parse_qsl(sent.content.decode())) == {
        "To": "+14155552671",
        "Body": "Your booking is confirmed",
        "From": "+15005550006",
        "StatusCallback": "https://sms.example.com/api/sms/webhook",
        "ValidityPeriod": "600",
        "SmartEncoded": "true",
    }
    assert sent.headers["authorization"] == httpx.BasicAuth("AC" + "a1" * 16, "token")._auth_header
    check_contract(sent, route.calls.last.response)


@respx.mock
async def test_a_messaging_service_is_used_instead_of_from(client: TwilioClient) -> None:
    route = respx.post(f"{BASE}/Messages.json").respond(201, json=resource(status="accepted"))
    service = "MG" + "c3" * 16

    await client.create_message(
        NewMessage(
            to="+14155552671", body="hi", from_number="+15005550006", messaging_service_sid=service
        )
    )

    form = dict(parse_qsl(route.calls.last.request.content.decode()))
    assert form["MessagingServiceSid"] == service
    assert "From" not in form
    check_contract(route.calls.last.request, route.calls.last.response)


@respx.mock
async def test_fetch_list_and_cancel_follow_the_contract(client: TwilioClient) -> None:
    fetched = example(MESSAGE, "get", "200", "fetch")
    listed = example(MESSAGES, "get", "200", "readFullPage1")
    cancelled = example(MESSAGE, "post", "200", "cancelMessage")
    fetch = respx.get(f"{BASE}/Messages/{SID}.json").respond(200, json=fetched)
    listing = respx.get(f"{BASE}/Messages.json").respond(200, json=listed)
    cancel = respx.post(f"{BASE}/Messages/{SID}.json").respond(200, json=cancelled)

    message = await client.fetch_message(SID)
    page = await client.list_messages(
        to="+14155552671", sent_on_or_after=datetime(2026, 11, 21, 10, tzinfo=UTC), page_size=20
    )
    after_cancel = await client.cancel_message(SID)

    assert message.sid == fetched["sid"]
    assert [item.sid for item in page] == [item["sid"] for item in listed["messages"]]
    assert after_cancel.status == "canceled"
    assert dict(listing.calls.last.request.url.params) == {
        "PageSize": "20",
        "To": "+14155552671",
        "DateSent>": "2026-11-21T10:00:00Z",
    }
    assert dict(parse_qsl(cancel.calls.last.request.content.decode())) == {"Status": "canceled"}
    for route in (fetch, listing, cancel):
        check_contract(route.calls.last.request, route.calls.last.response)


def twilio_error(code: int, status: int, message: str = "error") -> httpx.Response:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return httpx.Response(status, json=body)


@pytest.mark.parametrize(
    ("answer", "kind", "code"),
    [
        (twilio_error(20429, 429), TwilioRetryableError, 20429),
        (httpx.Response(429), TwilioRetryableError, None),
        (twilio_error(21611, 400), TwilioRetryableError, 21611),
        (twilio_error(30001, 400), TwilioRetryableError, 30001),
        (twilio_error(20003, 401), TwilioConfigurationError, 20003),
        (twilio_error(21606, 400), TwilioConfigurationError, 21606),
        (twilio_error(21212, 400), TwilioConfigurationError, 21212),
        (twilio_error(21211, 400), TwilioPermanentError, 21211),
        (twilio_error(21614, 400), TwilioPermanentError, 21614),
        (twilio_error(21617, 400), TwilioPermanentError, 21617),
        (twilio_error(21610, 400), TwilioPermanentError, 21610),
        (twilio_error(20404, 404), TwilioNotFound, 20404),
        (twilio_error(20500, 500), TwilioAmbiguousError, 20500),
        (httpx.Response(502, text="<html>bad gateway</html>"), TwilioAmbiguousError, None),
        (httpx.Response(503), TwilioAmbiguousError, None),
    ],
)
@respx.mock
async def test_create_errors_say_what_a_retry_would_do(
    client: TwilioClient, answer: httpx.Response, kind: type[TwilioError], code: int | None
) -> None:
    respx.post(f"{BASE}/Messages.json").mock(return_value=answer)

    with pytest.raises(TwilioError) as raised:
        await client.create_message(NewMessage(to="+14155552671", body="hi", from_number="+1500"))

    assert type(raised.value) is kind
    assert raised.value.code == code
    assert raised.value.status == answer.status_code


@respx.mock
async def test_an_opt_out_is_recognisable(client: TwilioClient) -> None:
    respx.post(f"{BASE}/Messages.json").mock(return_value=twilio_error(21610, 400))

    with pytest.raises(TwilioPermanentError) as raised:
        await client.create_message(NewMessage(to="+15005550004", body="hi", from_number="+1500"))

    assert raised.value.opted_out


@pytest.mark.parametrize(
    ("failure", "on_create", "on_fetch"),
    [
        (httpx.ConnectError("refused"), TwilioRetryableError, TwilioRetryableError),
        (httpx.ConnectTimeout("slow dns"), TwilioRetryableError, TwilioRetryableError),
        (httpx.PoolTimeout("pool"), TwilioRetryableError, TwilioRetryableError),
        (httpx.ReadTimeout("no answer"), TwilioAmbiguousError, TwilioRetryableError),
        (httpx.WriteTimeout("half sent"), TwilioAmbiguousError, TwilioRetryableError),
        (httpx.RemoteProtocolError("dropped"), TwilioAmbiguousError, TwilioRetryableError),
        (httpx.ReadError("reset"), TwilioAmbiguousError, TwilioRetryableError),
    ],
)
@respx.mock
async def test_network_failures_are_ambiguous_only_where_the_request_may_have_landed(
    client: TwilioClient,
    failure: Exception,
    on_create: type[TwilioError],
    on_fetch: type[TwilioError],
) -> None:
    respx.post(f"{BASE}/Messages.json").mock(side_effect=failure)
    respx.get(f"{BASE}/Messages/{SID}.json").mock(side_effect=failure)

    with pytest.raises(TwilioError) as created:
        await client.create_message(NewMessage(to="+14155552671", body="hi", from_number="+1500"))
    with pytest.raises(TwilioError) as fetched:
        await client.fetch_message(SID)

    assert type(created.value) is on_create
    assert type(fetched.value) is on_fetch


@respx.mock
async def test_a_5xx_on_a_read_is_simply_retryable(client: TwilioClient) -> None:
    respx.get(f"{BASE}/Messages/{SID}.json").mock(return_value=httpx.Response(503))

    with pytest.raises(TwilioRetryableError):
        await client.fetch_message(SID)


@respx.mock
async def test_an_unparseable_success_is_an_error_not_a_crash(client: TwilioClient) -> None:
    respx.get(f"{BASE}/Messages/{SID}.json").mock(return_value=httpx.Response(200, text="{}"))

    with pytest.raises(TwilioError, match="unexpected answer"):
        await client.fetch_message(SID)
