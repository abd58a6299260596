"""Status callbacks: the form Twilio posts on each status change, signed, over one client."""

from __future__ import annotations

import logging
from datetime import datetime
from urllib.parse import urlencode

import aiohttp

from app.twilio.signature import compute_signature
from app.twilio_sandbox.carrier import Status, dlr_done_date
from app.twilio_sandbox.store import API_VERSION, SandboxMessage

logger = logging.getLogger(__name__)


def status_params(message: SandboxMessage, now: datetime) -> dict[str, str]:
    """The callback's parameters for the message's current status."""
    params = {
        "MessageSid": message.sid,
        "SmsSid": message.sid,
        "MessageStatus": message.status.value,
        "SmsStatus": message.status.value,
        "AccountSid": message.account_sid,
        "To": message.to,
        "ApiVersion": API_VERSION,
    }
    if message.from_ is not None:
        params["From"] = message.from_
    if message.messaging_service_sid is not None:
        params["MessagingServiceSid"] = message.messaging_service_sid
    if message.status in (Status.FAILED, Status.UNDELIVERED) and message.error_code is not None:
        params["ErrorCode"] = str(message.error_code)
    if message.status in (Status.DELIVERED, Status.UNDELIVERED):
        params["RawDlrDoneDate"] = dlr_done_date(now)
    return params


_FORM = "application/x-www-form-urlencoded"


class CallbackSender:
    """Posts signed callbacks. Failures are logged and dropped: the sandbox never retries.

    aiohttp, not httpx: the sandbox stands in for Twilio's servers and must not be the limit of
    the benchmarks it serves. Posting a callback cost httpx ~2-4 ms of CPU against ~0.3 ms for
    aiohttp (httpcore checks every pooled connection whenever a request starts or ends), and
    two callbacks per message made the sandbox's own callbacks its bottleneck. At most
    `max_in_flight` posts at once, over as many keep-alive connections; the rest wait their turn,
    as Twilio queues its callbacks: `timeout_seconds` counts from the connection on (connect,
    then each read), so a backlog in the sandbox itself drops nothing."""

    def __init__(self, auth_token: str, timeout_seconds: float, max_in_flight: int = 100) -> None:
        self._auth_token = auth_token
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeout_seconds, sock_read=timeout_seconds
        )
        self._max_in_flight = max_in_flight
        self._session: aiohttp.ClientSession | None = None

    def open(self) -> None:
        self._http()

    def _http(self) -> aiohttp.ClientSession:
        # Mounted in another app the lifespan never runs: the session is then made on first use.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers={"User-Agent": "TwilioProxy/1.1 (sandbox)"},
                connector=aiohttp.TCPConnector(limit=self._max_in_flight),
            )
        return self._session

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def send(self, url: str, params: dict[str, str]) -> None:
        signature = compute_signature(self._auth_token, url, params)
        # Encoded here, as aiohttp's FormData would encode it: FormData's own machinery was
        # ~9% of the sandbox's CPU in a campaign.
        body = urlencode(params).encode()
        headers = {"X-Twilio-Signature": signature, "Content-Type": _FORM}
        try:
            async with self._http().post(url, data=body, headers=headers) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as error:
            logger.warning(
                "status callback %s for %s to %s failed: %r",
                params["MessageStatus"],
                params["MessageSid"],
                url,
                error,
            )
            return
        if not 200 <= status < 300:
            logger.warning(
                "status callback %s for %s to %s answered %s",
                params["MessageStatus"],
                params["MessageSid"],
                url,
                status,
            )
