"""The requests the scenarios send: JSON to the API with the suite's key, signed Twilio forms."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from urllib.parse import urlencode, urlsplit

from app.core.settings import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, SANDBOX_FROM_NUMBER
from app.twilio.signature import compute_signature
from bench.suite.load import http_request

WEBHOOK = "/api/sms/webhook"


def address(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


def send_request(
    base_url: str,
    api_key: str,
    to: str,
    body: str,
    *,
    send_at: datetime | None = None,
    category: str | None = None,
) -> bytes:
    """POST /api/sms/send to a number given directly."""
    host, port = address(base_url)
    fields: dict[str, str] = {"to": to, "body": body}
    if send_at is not None:
        fields["send_at"] = send_at.isoformat()
    if category is not None:
        fields["category"] = category
    return http_request(
        host,
        port,
        "/api/sms/send",
        json.dumps(fields).encode(),
        "application/json",
        {"Authorization": f"Bearer {api_key}"},
    )


def status_callback(base_url: str, sid: str, status: str) -> bytes:
    """A status callback as the sandbox (and Twilio) posts it, signed over the public URL."""
    host, port = address(base_url)
    params: Mapping[str, str] = {
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "AccountSid": SANDBOX_ACCOUNT_SID,
        "From": SANDBOX_FROM_NUMBER,
        "To": "+15005550006",
        "ApiVersion": "2010-04-01",
    }
    signature = compute_signature(SANDBOX_AUTH_TOKEN, base_url + WEBHOOK, params)
    return http_request(
        host,
        port,
        WEBHOOK,
        urlencode(params).encode(),
        "application/x-www-form-urlencoded",
        {"X-Twilio-Signature": signature},
    )
