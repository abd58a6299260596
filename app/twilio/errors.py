"""Twilio's errors as typed exceptions that say whether a retry can help (twilio/FACTS.md)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Remedy(StrEnum):
    RETRY = "retry"  # never processed: safe to send again after a backoff
    NONE = "none"  # will fail the same way again
    CONFIGURATION = "configuration"  # our account or sender is wrong: an operator must act


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    meaning: str
    remedy: Remedy


# The codes this service acts on; any other 4xx is permanent, 5xx is ambiguous on create.
TWILIO_ERRORS: dict[int, ErrorInfo] = {
    20003: ErrorInfo("authentication failed", Remedy.CONFIGURATION),
    20404: ErrorInfo("the resource was not found", Remedy.NONE),
    20429: ErrorInfo("too many concurrent requests", Remedy.RETRY),
    21211: ErrorInfo("invalid To number", Remedy.NONE),
    21212: ErrorInfo("invalid From number", Remedy.CONFIGURATION),
    21408: ErrorInfo("region not enabled (geo permissions)", Remedy.NONE),
    21602: ErrorInfo("message body is required", Remedy.NONE),
    21603: ErrorInfo("a From number is required", Remedy.CONFIGURATION),
    21606: ErrorInfo("From is not a message-capable Twilio number", Remedy.CONFIGURATION),
    21608: ErrorInfo("trial account: To not verified", Remedy.CONFIGURATION),
    21610: ErrorInfo("recipient replied STOP (unsubscribed)", Remedy.NONE),
    21611: ErrorInfo("sender queue full (over 10 h backlog)", Remedy.RETRY),
    21612: ErrorInfo("To not reachable via SMS", Remedy.NONE),
    21614: ErrorInfo("To is not a mobile number", Remedy.NONE),
    21617: ErrorInfo("body over 1600 characters", Remedy.NONE),
    30001: ErrorInfo("queue overflow", Remedy.RETRY),
    30003: ErrorInfo("unreachable handset", Remedy.NONE),
    30004: ErrorInfo("message blocked", Remedy.NONE),
    30005: ErrorInfo("unknown destination handset", Remedy.NONE),
    30006: ErrorInfo("landline or unreachable carrier", Remedy.NONE),
    30007: ErrorInfo("carrier filtering", Remedy.NONE),
    30008: ErrorInfo("unknown error", Remedy.NONE),
    30034: ErrorInfo("unregistered US 10DLC number", Remedy.CONFIGURATION),
}

OPT_OUT_CODE = 21610


def meaning_of(code: int | None) -> str | None:
    info = TWILIO_ERRORS.get(code) if code is not None else None
    return info.meaning if info else None


class TwilioError(Exception):
    """A request to Twilio that did not succeed."""

    def __init__(self, message: str, *, code: int | None = None, status: int | None = None):
        super().__init__(f"{message} (code {code}, HTTP {status})" if code or status else message)
        self.message = message
        self.code = code
        self.status = status


class TwilioRetryableError(TwilioError):
    """Twilio did not take the request (429, queue full, connection never made): send again
    after a backoff."""


class TwilioAmbiguousError(TwilioError):
    """A create that may or may not have been accepted (timeout, dropped connection, 5xx):
    look for the message before sending it again."""


class TwilioPermanentError(TwilioError):
    """The request will fail the same way again."""

    @property
    def opted_out(self) -> bool:
        return self.code == OPT_OUT_CODE


class TwilioConfigurationError(TwilioPermanentError):
    """Our credentials, account or sender are wrong: every message would fail alike."""


class TwilioNotFound(TwilioPermanentError):
    pass
