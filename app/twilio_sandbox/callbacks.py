"""Status callbacks: the form Twilio posts on each status change, signed, over one client."""

from __future__ import annotations

import logging
from datetime import datetime
from functools import lru_cache
from urllib.parse import quote_plus

from app.twilio.signature import compute_signature
from app.twilio_sandbox.carrier import Status, dlr_done_date
from app.twilio_sandbox.poster import Poster, PostFailed
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


def form_body(params: dict[str, str]) -> bytes:
    """`urlencode(params).encode()`, each name and value quoted once per process: a message's
    two callbacks repeat its SID four times, its numbers and the account's, and quote_plus
    was ~7% of the sandbox's CPU in a campaign."""
    return "&".join(f"{_quoted(name)}={_quoted(value)}" for name, value in params.items()).encode()


@lru_cache(maxsize=4096)
def _quoted(text: str) -> str:
    return quote_plus(text)


class CallbackSender:
    """Posts signed callbacks. Failures are logged and dropped: the sandbox never retries.

    At most `max_in_flight` posts at once, over as many keep-alive connections; the rest wait
    their turn, as Twilio queues its callbacks: `timeout_seconds` counts from the turn on
    (connect, then the answer), so a backlog in the sandbox itself drops nothing. The client is
    the sandbox's own (app/twilio_sandbox/poster.py says why)."""

    def __init__(self, auth_token: str, timeout_seconds: float, max_in_flight: int = 100) -> None:
        self._auth_token = auth_token
        self._timeout_seconds = timeout_seconds
        self._max_in_flight = max_in_flight
        self._poster: Poster | None = None

    def open(self) -> None:
        self._http()

    def _http(self) -> Poster:
        # Mounted in another app the lifespan never runs: the poster is then made on first use.
        if self._poster is None:
            self._poster = Poster(
                user_agent="TwilioProxy/1.1 (sandbox)",
                timeout_seconds=self._timeout_seconds,
                max_in_flight=self._max_in_flight,
            )
        return self._poster

    async def aclose(self) -> None:
        poster, self._poster = self._poster, None
        if poster is not None:
            await poster.aclose()

    async def send(self, url: str, params: dict[str, str]) -> None:
        signature = compute_signature(self._auth_token, url, params)
        headers = {"X-Twilio-Signature": signature, "Content-Type": _FORM}
        try:
            status = await self._http().post(url, headers, form_body(params))
        except (PostFailed, OSError, TimeoutError) as error:
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
