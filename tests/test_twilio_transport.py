"""The aiohttp transport the Twilio client uses in production, against real sockets: answers
arrive intact, and every network failure is sorted into "never sent" or "maybe sent" exactly,
since a create that is wrongly called never sent is sent twice."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

import httpx
import pytest

from app.twilio.client import TwilioClient
from app.twilio.errors import (
    TwilioAmbiguousError,
    TwilioPermanentError,
    TwilioRetryableError,
)
from app.twilio.schemas import NewMessage
from app.twilio.transport import AiohttpTransport
from tests.test_twilio_client import ACCOUNT, SID, resource

MESSAGE = NewMessage(to="+14155550100", body="Your table is ready", from_number="+15005550006")
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Server:
    """A raw HTTP/1.1 server on a free port: each test says what it does with a request."""

    port: int
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)  # (head, body)
    connections: int = 0
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def account_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head, await reader.readexactly(length)


def answer(status: int, body: bytes, *, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} Whatever", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[Server]:
    server = Server(port=0)

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.connections += 1
        server.connected.set()
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    listening = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    server.port = listening.sockets[0].getsockname()[1]
    async with listening:
        yield server


def client_for(server_url: str, *, timeout_seconds: float = 2.0) -> TwilioClient:
    return TwilioClient(replace(ACCOUNT, base_url=server_url), timeout_seconds=timeout_seconds)


async def test_a_create_goes_out_as_a_form_with_basic_auth_and_its_answer_is_read() -> None:
    created = json.dumps(resource(status="queued")).encode()

    async def twilio(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:  # keep-alive: every request on this one connection
            head, body = await read_request(reader)
            server.requests.append((head, body))
            writer.write(
                answer(
                    201,
                    gzip.compress(created),
                    headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
                )
            )
            await writer.drain()

    async with serving(twilio) as server:
        client = client_for(server.account_url)
        try:
            first = await client.create_message(MESSAGE)
            second = await client.create_message(MESSAGE)
        finally:
            await client.aclose()

    assert first.sid == second.sid == SID
    assert first.status == "queued"
    assert server.connections == 1  # the connection was kept and used again
    head, body = server.requests[0]
    request_line, *header_lines = head.decode().strip().split("\r\n")
    assert request_line == f"POST /2010-04-01/Accounts/{ACCOUNT.account_sid}/Messages.json HTTP/1.1"
    fields = (line.partition(":") for line in header_lines)
    headers = {name.lower(): value.strip() for name, _, value in fields}
    credentials = f"{ACCOUNT.username}:{ACCOUNT.password}".encode()
    assert headers["authorization"] == "Basic " + base64.b64encode(credentials).decode()
    assert headers["content-type"] == "application/x-www-form-urlencoded"
    assert body == b"To=%2B14155550100&Body=Your+table+is+ready&From=%2B15005550006"


async def test_a_twilio_error_answer_is_read_as_twilio_wrote_it() -> None:
    refusal = json.dumps({"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400})

    async def twilio(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(400, refusal.encode(), headers={"Content-Type": "application/json"}))
        await writer.drain()

    async with serving(twilio) as server:
        client = client_for(server.account_url)
        try:
            with pytest.raises(TwilioPermanentError) as refused:
                await client.create_message(MESSAGE)
        finally:
            await client.aclose()
    assert refused.value.code == 21211


def _closed_port() -> int:
    with socket.socket() as probe:  # bound, never listening: a connection is refused
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_a_refused_connection_is_never_sent_so_simply_retryable() -> None:
    client = client_for(f"http://127.0.0.1:{_closed_port()}")
    try:
        with pytest.raises(TwilioRetryableError, match="could not reach Twilio"):
            await client.create_message(MESSAGE)
    finally:
        await client.aclose()


async def _close_after_reading(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)  # the request arrived: Twilio may have taken it


async def _never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    await asyncio.sleep(30)


async def _close_mid_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b'HTTP/1.1 201 Created\r\nContent-Length: 500\r\n\r\n{"sid": "SM')
    await writer.drain()


@pytest.mark.parametrize(
    "server_does",
    [_close_after_reading, _never_answer, _close_mid_answer],
    ids=["closes-after-the-request", "never-answers", "closes-mid-answer"],
)
async def test_a_request_that_left_is_maybe_sent_for_a_create_and_retryable_for_a_read(
    server_does: Handler,
) -> None:
    async with serving(server_does) as server:
        client = client_for(server.account_url, timeout_seconds=0.5)
        try:
            with pytest.raises(TwilioAmbiguousError, match="no answer from Twilio"):
                await client.create_message(MESSAGE)
            assert server.connections == 1  # a create is never tried again by the transport
            with pytest.raises(TwilioRetryableError, match="no answer from Twilio"):
                await client.fetch_message(SID)
        finally:
            await client.aclose()


async def test_waiting_too_long_for_a_free_connection_is_never_sent() -> None:
    """Every connection busy (here the only one, on a request the server holds): the next
    request gives up before it was written anywhere."""
    async with serving(_never_answer) as server:
        transport = AiohttpTransport(max_connections=1)
        url = f"{server.account_url}/2010-04-01/Accounts/x/Messages.json"

        def request(pool_seconds: float) -> httpx.Request:
            timeouts = {"pool": pool_seconds, "connect": 0.1, "read": 5.0, "write": 5.0}
            return httpx.Request("POST", url, data={"To": "+1"}, extensions={"timeout": timeouts})

        try:
            holding = asyncio.create_task(transport.handle_async_request(request(5.0)))
            await server.connected.wait()
            with pytest.raises(httpx.ConnectTimeout):
                await transport.handle_async_request(request(0.2))
            assert server.connections == 1  # the second request never had a connection
            holding.cancel()
        finally:
            await transport.aclose()


async def test_a_proxy_named_in_the_environment_is_used_as_httpx_used_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created = json.dumps(resource(status="queued")).encode()

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.requests.append(await read_request(reader))
        writer.write(answer(201, created, headers={"Content-Type": "application/json"}))
        await writer.drain()

    async with serving(proxy) as server:
        monkeypatch.setenv("HTTP_PROXY", server.account_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        client = client_for("http://api.twilio.invalid")  # resolvable only by the proxy
        try:
            message = await client.create_message(MESSAGE)
        finally:
            await client.aclose()

    assert message.sid == SID
    request_line = server.requests[0][0].split(b"\r\n")[0].decode()
    path = f"/2010-04-01/Accounts/{ACCOUNT.account_sid}/Messages.json"
    assert request_line == f"POST http://api.twilio.invalid{path} HTTP/1.1"
