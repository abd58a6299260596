"""The sandbox's callback client (app/twilio_sandbox/poster.py) against real sockets: the
request as a server reads it, connections kept and given up as HTTP/1.1 says, every way an
answer can end, and the failures a callback is dropped for."""

from __future__ import annotations

import asyncio
import base64
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlencode

import pytest
import uvloop

from app.twilio_sandbox.callbacks import CallbackSender, form_body
from app.twilio_sandbox.poster import Poster, PostFailed
from tests.test_twilio_transport import Handler, Server, answer, read_request, serving

FORM = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "c2lnbg=="}


@asynccontextmanager
async def poster(timeout_seconds: float = 2.0, max_in_flight: int = 10) -> AsyncIterator[Poster]:
    made = Poster("TwilioProxy/1.1 (sandbox)", timeout_seconds, max_in_flight)
    try:
        yield made
    finally:
        await made.aclose()


def keep_answering(server_of: list[Server], status: int = 204) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            server_of[0].requests.append(await read_request(reader))
            writer.write(answer(status, b""))
            await writer.drain()

    return handler


def headers_of(head: bytes) -> tuple[str, dict[str, str]]:
    request_line, *lines = head.decode().strip().split("\r\n")
    fields = (line.partition(":") for line in lines)
    return request_line, {name.lower(): value.strip() for name, _, value in fields}


async def test_posts_to_one_origin_share_a_kept_connection_and_arrive_as_sent() -> None:
    found: list[Server] = []
    async with serving(keep_answering(found)) as server, poster() as client:
        found.append(server)
        url = f"http://127.0.0.1:{server.port}/api/sms/webhook?via=sandbox&n=1"
        first = await client.post(url, FORM, b"MessageSid=SM1&MessageStatus=sent")
        second = await client.post(url, FORM, b"MessageSid=SM1&MessageStatus=delivered")

    assert (first, second) == (204, 204)
    assert server.connections == 1
    (head, body), (_, later) = server.requests
    request_line, headers = headers_of(head)
    assert request_line == "POST /api/sms/webhook?via=sandbox&n=1 HTTP/1.1"
    assert headers == {
        "host": f"127.0.0.1:{server.port}",
        "user-agent": "TwilioProxy/1.1 (sandbox)",
        "content-type": "application/x-www-form-urlencoded",
        "x-twilio-signature": "c2lnbg==",
        "content-length": str(len(body)),
    }
    assert (body, later) == (
        b"MessageSid=SM1&MessageStatus=sent",
        b"MessageSid=SM1&MessageStatus=delivered",
    )


async def test_credentials_in_the_url_go_as_basic_auth_and_a_path_is_percent_encoded() -> None:
    found: list[Server] = []
    async with serving(keep_answering(found)) as server, poster() as client:
        found.append(server)
        url = f"http://twilio:s%3Acret@127.0.0.1:{server.port}/status/café"
        assert await client.post(url, FORM, b"") == 204

    request_line, headers = headers_of(server.requests[0][0])
    assert request_line == "POST /status/caf%C3%A9 HTTP/1.1"
    assert headers["host"] == f"127.0.0.1:{server.port}"
    assert headers["authorization"] == "Basic " + base64.b64encode(b"twilio:s:cret").decode()


@pytest.mark.parametrize(
    ("answer_bytes", "kept"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", False),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", True),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
    ],
    ids=["connection-close", "chunked", "http-1.0"],
)
async def test_a_connection_is_kept_only_when_the_answer_allows_it(
    answer_bytes: bytes, kept: bool
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(answer_bytes)
            await writer.drain()

    async with serving(handler) as server, poster() as client:
        url = f"http://127.0.0.1:{server.port}/status"
        assert [await client.post(url, FORM, b"x=1") for _ in range(2)] == [200, 200]

    assert server.connections == (1 if kept else 2)


async def test_an_answer_without_a_length_ends_with_its_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 500 Oops\r\nContent-Type: text/plain\r\n\r\nsomething broke")
        await writer.drain()
        writer.close()

    async with serving(handler) as server, poster() as client:
        assert await client.post(f"http://127.0.0.1:{server.port}/s", FORM, b"") == 500


async def test_a_kept_connection_the_server_closed_meanwhile_is_not_used_again() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(204, b""))  # keep-alive by HTTP/1.1's default, then closed
        await writer.drain()

    async with serving(handler) as server, poster() as client:
        url = f"http://127.0.0.1:{server.port}/status"
        assert await client.post(url, FORM, b"") == 204
        await asyncio.sleep(0.05)  # the close reaches the client
        assert await client.post(url, FORM, b"") == 204

    assert server.connections == 2


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"", PostFailed),  # closed after reading the request
        (b"HTTP/1.1 204 No Content\r\nContent-Len", PostFailed),  # closed mid-answer
        (b"SSH-2.0-OpenSSH_9.6\r\n", PostFailed),  # not HTTP
        (None, TimeoutError),  # never answers
    ],
    ids=["closed", "cut-short", "not-http", "silent"],
)
async def test_an_answer_that_never_comes_whole_fails_the_post(
    reply: bytes | None, error: type[Exception]
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if reply is None:
            await asyncio.sleep(5)
        writer.write(reply or b"")
        await writer.drain()

    async with serving(handler) as server, poster(timeout_seconds=0.3) as client:
        with pytest.raises(error):
            await client.post(f"http://127.0.0.1:{server.port}/status", FORM, b"")
        assert client.connections == 0  # nothing half-read is used again


async def test_a_refused_connection_fails_the_post() -> None:
    async with serving(keep_answering([])) as server:
        port = server.port
    async with poster() as client:
        with pytest.raises(ConnectionRefusedError):
            await client.post(f"http://127.0.0.1:{port}/status", FORM, b"")


async def test_posts_over_max_in_flight_wait_their_turn_untimed() -> None:
    """Three posts, one at a time, each answered after 0.2 s, a 0.3 s timeout: the third
    waits 0.4 s for its turn and still goes."""
    found: list[Server] = []
    busiest = 0
    at_once = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal busiest, at_once
        while True:
            found[0].requests.append(await read_request(reader))
            at_once += 1
            busiest = max(busiest, at_once)
            await asyncio.sleep(0.2)
            at_once -= 1
            writer.write(answer(204, b""))
            await writer.drain()

    async with serving(handler) as server, poster(0.3, max_in_flight=1) as client:
        found.append(server)
        url = f"http://127.0.0.1:{server.port}/status"
        statuses = await asyncio.gather(*(client.post(url, FORM, b"n=%d" % n) for n in range(3)))

    assert statuses == [204, 204, 204]
    assert busiest == 1
    assert server.connections == 1


def test_posts_work_on_uvloop_as_the_sandbox_serves_under_uvicorn() -> None:
    """uvloop's transports are not asyncio.Transport subclasses."""

    async def scenario() -> tuple[list[int], int]:
        found: list[Server] = []
        async with serving(keep_answering(found)) as server, poster() as client:
            found.append(server)
            url = f"http://127.0.0.1:{server.port}/status"
            statuses = [await client.post(url, FORM, b"n=%d" % n) for n in range(3)]
        return statuses, server.connections

    loop = uvloop.new_event_loop()
    try:
        assert loop.run_until_complete(scenario()) == ([204, 204, 204], 1)
    finally:
        loop.close()


def test_a_callbacks_form_is_encoded_as_urlencode_encodes_it() -> None:
    draw = random.Random(20261122)
    alphabet = "aZ09+ &=%/:?#é€😀~._-\n"
    for _ in range(500):
        params = {
            "".join(draw.choices(alphabet, k=draw.randrange(1, 8))): "".join(
                draw.choices(alphabet, k=draw.randrange(0, 12))
            )
            for _ in range(draw.randrange(1, 6))
        }
        assert form_body(params) == urlencode(params).encode(), params
    status = {"MessageSid": "SM" + "a" * 32, "To": "+14155550100", "MessageStatus": "sent"}
    assert (
        form_body(status) == b"MessageSid=SM" + b"a" * 32 + b"&To=%2B14155550100&MessageStatus=sent"
    )


async def test_an_interim_answer_is_not_taken_for_the_answer() -> None:
    """A 100 Continue comes before the real answer: each post gets its own on a kept
    connection."""
    found: list[Server] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for status in (500, 201):
            found[0].requests.append(await read_request(reader))
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(status, b""))
            await writer.drain()
        await reader.read()

    async with serving(handler) as server, poster() as client:
        found.append(server)
        url = f"http://127.0.0.1:{server.port}/status"
        statuses = [await client.post(url, FORM, b"n=%d" % n) for n in range(2)]

    assert statuses == [500, 201]
    assert server.connections == 1


async def test_an_answer_cut_short_of_its_length_fails_the_post() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
        await writer.drain()

    async with serving(handler) as server, poster() as client:
        with pytest.raises(PostFailed):
            await client.post(f"http://127.0.0.1:{server.port}/status", FORM, b"")


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/cb", "http://127.0.0.1:port/cb"])
async def test_a_url_no_request_can_go_to_fails_the_post(url: str) -> None:
    async with poster() as client:
        with pytest.raises(PostFailed, match="no request can go to"):
            await client.post(url, FORM, b"")


async def test_a_callback_to_such_a_url_is_logged_and_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sender = CallbackSender("token", timeout_seconds=1.0)
    caplog.set_level(logging.WARNING, logger="app.twilio_sandbox.callbacks")
    try:
        await sender.send(
            "http://127.0.0.1:99999/cb", {"MessageSid": "SM1", "MessageStatus": "sent"}
        )
    finally:
        await sender.aclose()

    assert "status callback sent for SM1 to http://127.0.0.1:99999/cb failed" in caplog.text
