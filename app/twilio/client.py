"""The one Twilio client: built once per process and injected.

Create is not idempotent, so failures are sorted by what they mean for a retry: never sent
(retryable), maybe sent (ambiguous: look before resending), or final (permanent)."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
from pydantic import ValidationError

from app.core.settings import TwilioAccount
from app.twilio import metrics
from app.twilio.errors import (
    TWILIO_ERRORS,
    Remedy,
    TwilioAmbiguousError,
    TwilioConfigurationError,
    TwilioError,
    TwilioNotFound,
    TwilioPermanentError,
    TwilioRetryableError,
)
from app.twilio.schemas import MessagePage, NewMessage, TwilioMessage
from app.twilio.transport import AiohttpTransport

logger = logging.getLogger(__name__)

_Resource = TypeVar("_Resource", TwilioMessage, MessagePage)

API_VERSION = "2010-04-01"
# Errors raised before a single byte of the request left: the request cannot have arrived.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class TwilioClient:
    """Requests go straight to an httpx transport, without httpx's client: Twilio needs none
    of its cookies, redirects or URL merging, which were ~40% of a create's CPU (py-spy)."""

    def __init__(
        self,
        account: TwilioAccount,
        *,
        timeout_seconds: float = 10.0,
        max_connections: int = 50,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`transport`: aiohttp's (app/twilio/transport.py) unless given; unit tests give
        httpx's own, which respx intercepts."""
        self.account = account
        self._base_url = f"{account.base_url}/{API_VERSION}/Accounts/{account.account_sid}"
        # Parsed once: httpx parses a URL given as text on every request.
        self._messages_url = httpx.URL(self._base_url + "/Messages.json")
        self._transport = transport or AiohttpTransport(max_connections=max_connections)
        credentials = f"{account.username}:{account.password}".encode()
        self._headers = {
            "Authorization": "Basic " + base64.b64encode(credentials).decode("ascii"),
            "User-Agent": "sms-service/0.1",
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
        }
        connect = min(timeout_seconds, 5.0)
        self._timeout = {
            "connect": connect,
            "read": timeout_seconds,
            "write": timeout_seconds,
            "pool": timeout_seconds,
        }

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def create_message(self, message: NewMessage) -> TwilioMessage:
        response = await self._send(
            "create", "POST", "/Messages.json", data=message.form(), idempotent=False
        )
        return self._parse(TwilioMessage, response)

    async def fetch_message(self, sid: str) -> TwilioMessage:
        response = await self._send("fetch", "GET", f"/Messages/{sid}.json")
        return self._parse(TwilioMessage, response)

    async def list_messages(
        self,
        *,
        to: str | None = None,
        from_number: str | None = None,
        sent_on_or_after: datetime | None = None,
        created_since: datetime | None = None,
        page_size: int = 50,
        max_pages: int = 1,
    ) -> list[TwilioMessage]:
        """Newest first. With `created_since`, further pages are read (up to `max_pages`) until
        they reach messages created before it."""
        params: dict[str, str] = {"PageSize": str(page_size)}
        if to:
            params["To"] = to
        if from_number:
            params["From"] = from_number
        if sent_on_or_after is not None:
            # The description types it `date-time` (Twilio reads the day of it).
            params["DateSent>"] = sent_on_or_after.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        listed = await self._send("list", "GET", "/Messages.json", params=params)
        page = self._parse(MessagePage, listed)
        messages = list(page.messages)
        for _ in range(max_pages - 1):
            oldest = messages[-1].date_created if messages else None
            if created_since is None or page.next_page_uri is None or oldest is None:
                break
            if oldest < created_since:
                break
            # next_page_uri is absolute from the host, not from our base URL's path.
            response = await self._send("list", "GET", self.account.base_url + page.next_page_uri)
            page = self._parse(MessagePage, response)
            messages.extend(page.messages)
        return messages

    async def cancel_message(self, sid: str) -> TwilioMessage:
        response = await self._send(
            "cancel", "POST", f"/Messages/{sid}.json", data={"Status": "canceled"}, idempotent=True
        )
        return self._parse(TwilioMessage, response)

    async def _send(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        data: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        idempotent: bool = True,
    ) -> httpx.Response:
        """`operation`: the label of the request's latency (create, fetch, list, cancel)."""
        started = time.perf_counter()
        if path == "/Messages.json":
            url: httpx.URL | str = self._messages_url
        else:
            url = self._base_url + path if path.startswith("/") else path
        request = httpx.Request(
            method,
            url,
            params=params,
            data=data,
            headers=self._headers,
            extensions={"timeout": self._timeout},
        )
        try:
            response = await self._transport.handle_async_request(request)
            try:
                await response.aread()
            finally:
                await response.aclose()
        except _NEVER_SENT as error:
            metrics.ERRORS.labels(metrics.transport_failure(error)).inc()
            raise TwilioRetryableError(f"could not reach Twilio: {error!r}") from error
        except httpx.TransportError as error:
            metrics.ERRORS.labels(metrics.transport_failure(error)).inc()
            kind = TwilioRetryableError if idempotent else TwilioAmbiguousError
            raise kind(f"no answer from Twilio: {error!r}") from error
        finally:
            elapsed = time.perf_counter() - started
            metrics.REQUEST_SECONDS.labels(operation).observe(elapsed)
        # The URL, never the form: a body may hold a code.
        logger.debug(
            "Twilio %s %s: %s in %.0f ms", method, request.url, response.status_code, elapsed * 1e3
        )
        if response.is_success:
            return response
        failure = _error_for(response, idempotent=idempotent)
        metrics.ERRORS.labels(metrics.error_label(failure.code, response.status_code)).inc()
        raise failure

    @staticmethod
    def _parse(model: type[_Resource], response: httpx.Response) -> _Resource:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as error:
            metrics.ERRORS.labels("invalid_response").inc()
            # Not the validation text: it echoes the answer, whose body may carry a code.
            fields = ", ".join(".".join(map(str, issue["loc"])) for issue in error.errors())
            raise TwilioError(f"unexpected answer from Twilio (fields: {fields})") from error


def _error_for(response: httpx.Response, *, idempotent: bool) -> TwilioError:
    body = _json_or_empty(response)
    code = body.get("code") if isinstance(body.get("code"), int) else None
    message = str(body.get("message") or response.reason_phrase or "error")
    status = response.status_code
    info = TWILIO_ERRORS.get(code) if code is not None else None
    if status == 429 or (info is not None and info.remedy is Remedy.RETRY):
        return TwilioRetryableError(message, code=code, status=status)
    if status >= 500:
        kind = TwilioRetryableError if idempotent else TwilioAmbiguousError
        return kind(message, code=code, status=status)
    if status == 401 or (info is not None and info.remedy is Remedy.CONFIGURATION):
        return TwilioConfigurationError(message, code=code, status=status)
    if status == 404:
        return TwilioNotFound(message, code=code, status=status)
    return TwilioPermanentError(message, code=code, status=status)


def _json_or_empty(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
