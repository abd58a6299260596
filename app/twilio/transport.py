"""The Twilio client's transport: httpx's requests and responses, sent over aiohttp.

httpx stays the client's interface (and respx's, in unit tests); the bytes go through aiohttp,
whose HTTP/1.1 parser and connection pool are in C. In a worker sending a campaign, httpcore's
pure-Python HTTP/1.1 was ~23% of the worker's CPU (py-spy); with aiohttp, and without httpx's
client above it, a create costs the client less than half the CPU (bench/twilio_client.py).

Written here rather than taken from a library: the ones published map aiohttp's errors for
GET-style retries, e.g. a connection reset or any ClientOSError to httpx.ConnectError. For a
create, which is not idempotent, that would turn "maybe sent" into "never sent" and a retry
into a second SMS. Here only errors raised before a byte of the request left are
ConnectError/ConnectTimeout; everything else is a read error or timeout (maybe sent).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import aiohttp
import httpx
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

Proxy = tuple[URL | None, aiohttp.BasicAuth | None]

# Raised while a connection was being made or taken from the pool: the request cannot have
# left. (ClientConnectorError covers DNS, refused, TLS handshake and proxy errors.)
_NEVER_SENT_TIMEOUT = aiohttp.ConnectionTimeoutError
_NEVER_SENT = aiohttp.ClientConnectorError
# Below uvicorn's and most servers' keep-alive timeout (5 s): a connection the server is
# about to close is not reused, where a POST would meet a disconnect and count as maybe sent.
KEEPALIVE_SECONDS = 4.0


@lru_cache(maxsize=1024)
def _yarl_url(url: str) -> URL:
    """aiohttp's form of the URL httpx encoded already; a worker sends to a handful of URLs."""
    return URL(url, encoded=True)


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(self, *, max_connections: int, keepalive_seconds: float = KEEPALIVE_SECONDS):
        self._max_connections = max_connections
        self._keepalive_seconds = keepalive_seconds
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[Any, ...], aiohttp.ClientTimeout] = {}
        self._proxies: dict[tuple[str, str | None, int | None], Proxy] = {}

    def _open(self) -> aiohttp.ClientSession:
        """In the running loop, on the first request (aiohttp binds to the loop)."""
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            keepalive_timeout=self._keepalive_seconds,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # httpx decodes, by the response's Content-Encoding
            cookie_jar=aiohttp.DummyCookieJar(),  # Twilio sets none we would send back
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),  # httpx's are sent
            timeout=aiohttp.ClientTimeout(total=None),
        )
        return self._session

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        """httpx's timeouts of the request: pool and connect until the connection is ours,
        connect for the socket's, read between bytes of the answer."""
        given = request.extensions.get("timeout", {})
        key = (given.get("pool"), given.get("connect"), given.get("read"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            pool, connect, read = key
            until_connected = None if pool is None or connect is None else pool + connect
            timeout = aiohttp.ClientTimeout(
                total=None, connect=until_connected, sock_connect=connect, sock_read=read
            )
            self._timeouts[key] = timeout
        return timeout

    def _proxy(self, url: URL) -> Proxy:
        """The proxy the environment names for the URL's origin (HTTPS_PROXY, NO_PROXY, ...),
        as httpx honoured it. Looked up once per origin: aiohttp's own `trust_env` looks it up
        in a thread on every request."""
        origin = (url.scheme, url.host, url.port)
        found = self._proxies.get(origin)
        if found is None:
            try:
                found = get_env_proxy_for_url(url)
            except LookupError:
                found = (None, None)
            self._proxies[origin] = found
        return found

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        body = await request.aread()
        url = _yarl_url(str(request.url))
        proxy, proxy_auth = self._proxy(url)
        try:
            async with session.request(
                request.method,
                url,
                proxy=proxy,
                proxy_auth=proxy_auth,
                headers=request.headers.multi_items(),
                data=body or None,
                timeout=self._timeout(request),
                allow_redirects=False,
            ) as answer:
                content = await answer.read()
        except _NEVER_SENT_TIMEOUT as error:
            raise httpx.ConnectTimeout(repr(error), request=request) from error
        except _NEVER_SENT as error:
            raise httpx.ConnectError(repr(error), request=request) from error
        except aiohttp.ServerTimeoutError as error:
            raise httpx.ReadTimeout(repr(error), request=request) from error
        except (aiohttp.ClientError, OSError) as error:
            raise httpx.ReadError(repr(error), request=request) from error
        return httpx.Response(
            answer.status,
            headers=list(answer.raw_headers),
            content=content,
            request=request,
            extensions={"reason_phrase": (answer.reason or "").encode()},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
