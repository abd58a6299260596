"""Status callbacks: the form Twilio posts on each status change, signed, over one client."""

from __future__ import annotations

import logging
from datetime import datetime

import httpx

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


class CallbackSender:
    """Posts signed callbacks. Failures are logged and dropped: the sandbox never retries."""

    def __init__(self, auth_token: str, timeout_seconds: float) -> None:
        self._auth_token = auth_token
        self._timeout = timeout_seconds
        self._client: httpx.AsyncClient | None = None

    def open(self) -> None:
        self._http()

    def _http(self) -> httpx.AsyncClient:
        # Mounted in another app the lifespan never runs: the client is then made on first use.
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout, headers={"User-Agent": "TwilioProxy/1.1 (sandbox)"}
            )
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def send(self, url: str, params: dict[str, str]) -> None:
        signature = compute_signature(self._auth_token, url, params)
        try:
            response = await self._http().post(
                url, data=params, headers={"X-Twilio-Signature": signature}
            )
        except httpx.HTTPError as error:
            logger.warning(
                "status callback %s for %s to %s failed: %r",
                params["MessageStatus"],
                params["MessageSid"],
                url,
                error,
            )
            return
        if not response.is_success:
            logger.warning(
                "status callback %s for %s to %s answered %s",
                params["MessageStatus"],
                params["MessageSid"],
                url,
                response.status_code,
            )
