"""The sandbox's HTTP client for status callbacks: small form POSTs over keep-alive HTTP/1.1
connections of its own, the answers parsed by httptools (uvicorn's parser, in C).

Why not aiohttp, which posted them before: its ClientSession machinery per request was ~25% of
the sandbox's CPU in a campaign (py-spy; two callbacks per message), and the sandbox stands in
for Twilio's servers: it must not be the limit of the benchmarks it serves. A callback asks
one thing of a client: send a form, read the answer's status, keep the connection. No
redirects, cookies, proxies or retries (Twilio's callbacks have none either)."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import cast
from urllib.parse import quote, unquote, urlsplit

import httptools


class PostFailed(Exception):
    """The answer never came whole: the connection failed, closed or spoke no HTTP."""


@dataclass(frozen=True, slots=True)
class Target:
    """A callback URL split once for every post to it."""

    scheme: str
    host: str
    port: int
    # Request line target and the headers every post to this URL carries.
    head: bytes

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port


@lru_cache(maxsize=1024)
def target_of(url: str, user_agent: str) -> Target:
    """Raises PostFailed for a URL no request can go to (a port out of range, say)."""
    try:
        return _target_of(url, user_agent)
    except ValueError as error:
        raise PostFailed(f"no request can go to {url!r}: {error}") from None


def _target_of(url: str, user_agent: str) -> Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    # What is not ASCII goes percent-encoded, as a browser (or Twilio) would send it.
    path = quote(path, safe="/?&=%:@!$'()*+,;~-._[]")
    lines = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc.rpartition('@')[2]}"]
    lines.append(f"User-Agent: {user_agent}")
    if parts.username is not None:  # Twilio sends a URL's credentials as Basic auth
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        lines.append(f"Authorization: Basic {base64.b64encode(credentials.encode()).decode()}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Target(parts.scheme, parts.hostname, port, ("\r\n".join(lines) + "\r\n").encode())


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer's status."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[int] | None = None
        self._headers_done = False
        self._framed = False  # a Content-Length or chunks: the answer's end is known
        self.closed = False
        self.reusable = False

    # asyncio's side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but are ones.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(PostFailed(f"not an HTTP answer: {error}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._headers_done and not self._framed and exc is None:
            # An answer without a length ends with its connection.
            self._finish(self._parser.get_status_code())
        else:
            self._fail(PostFailed(f"connection closed before the answer: {exc!r}"))

    # httptools' side
    def on_header(self, name: bytes, _: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self._framed = True

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:  # interim (100 Continue): the answer follows
            self._headers_done = self._framed = False
            return
        self.reusable = status != 101 and self._parser.should_keep_alive()
        self._finish(status)

    # ours
    async def post(self, request: bytes) -> int:
        assert self._transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self._headers_done = self._framed = self.reusable = False
        self._transport.write(request)
        return await self._answer

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def _finish(self, status: int) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(status)

    def _fail(self, error: Exception) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)


@dataclass(eq=False)
class Poster:
    """At most `max_in_flight` posts at once, each on a connection of its own (kept for the
    next post to the same origin). `timeout_seconds` counts from the turn on: a connection to
    make, then the answer; waiting for a turn is not timed (Twilio queues its callbacks)."""

    user_agent: str
    timeout_seconds: float
    max_in_flight: int
    _turns: asyncio.Semaphore = field(init=False)
    _idle: dict[tuple[str, str, int], list[_Connection]] = field(default_factory=dict, init=False)
    _open: set[_Connection] = field(default_factory=set, init=False)
    _tls: ssl.SSLContext | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._turns = asyncio.Semaphore(self.max_in_flight)

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> int:
        """The answer's status. Raises PostFailed, OSError or TimeoutError."""
        target = target_of(url, self.user_agent)
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = b"%s%sContent-Length: %d\r\n\r\n%s" % (
            target.head,
            extra.encode("latin-1"),
            len(body),
            body,
        )
        async with self._turns:
            async with asyncio.timeout(self.timeout_seconds):
                connection = self._take_idle(target) or await self._connect(target)
                try:
                    status = await connection.post(request)
                except BaseException:
                    self._drop(connection)
                    raise
            if connection.reusable and not connection.closed:
                self._idle.setdefault(target.origin, []).append(connection)
            else:
                self._drop(connection)
            return status

    @property
    def connections(self) -> int:
        """Connections open now, busy or kept."""
        return sum(not connection.closed for connection in self._open)

    async def aclose(self) -> None:
        for connection in list(self._open):
            self._drop(connection)
        self._idle.clear()

    def _take_idle(self, target: Target) -> _Connection | None:
        idle = self._idle.get(target.origin)
        while idle:
            connection = idle.pop()
            if not connection.closed:  # the server may have closed it since
                return connection
            self._open.discard(connection)
        return None

    async def _connect(self, target: Target) -> _Connection:
        tls = None
        if target.scheme == "https":
            tls = self._tls = self._tls or ssl.create_default_context()
        _, connection = await asyncio.get_running_loop().create_connection(
            _Connection, target.host, target.port, ssl=tls
        )
        self._open.add(connection)
        return connection

    def _drop(self, connection: _Connection) -> None:
        connection.close()
        self._open.discard(connection)
