"""Twilio's latency per operation, and its errors by code."""

from __future__ import annotations

import httpx
from prometheus_client import Counter, Histogram

REQUEST_SECONDS = Histogram(
    "sms_twilio_request_seconds",
    "Time of one HTTP request to Twilio, answered or not, by operation",
    ["operation"],  # create, fetch, list (each page), cancel
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
ERRORS = Counter(
    "sms_twilio_errors_total",
    "Requests to Twilio that failed: Twilio's error code, else timeout, connection, "
    "http_<status> (an error without a code) or invalid_response (an answer we could not read)",
    ["code"],
)


def transport_failure(error: httpx.TransportError) -> str:
    return "timeout" if isinstance(error, httpx.TimeoutException) else "connection"


def error_label(code: int | None, status: int) -> str:
    return str(code) if code is not None else f"http_{status}"
