"""Twilio's error answers: `{"code", "message", "more_info", "status"}` with an HTTP status."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel

MORE_INFO = "https://www.twilio.com/docs/errors/{code}"

# Twilio's wording, shortened; clients branch on the code, never on the text.
MESSAGES: Mapping[int, str] = {
    20001: "Invalid parameter",
    20003: "Authenticate",
    20004: "Method not allowed",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    20503: "Service Unavailable",
    21211: "The 'To' number is not a valid phone number.",
    21212: "The 'From' number is not a valid phone number, shortcode, or alphanumeric sender ID.",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the 'To'"
    " number.",
    21602: "Message body is required.",
    21603: "A 'From' phone number or a MessagingServiceSid is required.",
    21604: "A 'To' phone number is required.",
    21606: "The 'From' phone number provided is not a valid message-capable Twilio phone number"
    " for this destination.",
    21609: "Invalid StatusCallback URL.",
    21610: "Attempt to send to unsubscribed recipient",
    21611: "This 'From' number has exceeded the maximum number of queued messages.",
    21612: "The 'To' phone number is not currently reachable via SMS.",
    21614: "'To' number is not a valid mobile number.",
    21617: "The concatenated message body exceeds the 1600 character limit.",
    21701: "The Messaging Service Sid is invalid.",
    30400: "Parameters are not valid.",
    30409: "Message cannot be canceled",
    35111: "Scheduling needs ScheduleType=fixed, a SendAt time and a MessagingServiceSid.",
    35114: "SendAt time must be between 300 seconds and 35 days (3024000 seconds) in the future.",
    35126: "The ScheduleType value provided is not supported.",
}


class TwilioErrorBody(BaseModel):
    code: int
    message: str
    more_info: str
    status: int


class TwilioApiError(Exception):
    """A refusal as Twilio words it; one handler turns it into the JSON answer."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message or MESSAGES.get(code, "Error")
        self.headers = dict(headers or {})
        super().__init__(f"{status} {code} {self.message}")

    @property
    def body(self) -> TwilioErrorBody:
        return TwilioErrorBody(
            code=self.code,
            message=self.message,
            more_info=MORE_INFO.format(code=self.code),
            status=self.status,
        )


def bad_request(code: int, message: str | None = None) -> TwilioApiError:
    return TwilioApiError(400, code, message)


def not_found(resource: str) -> TwilioApiError:
    return TwilioApiError(404, 20404, f"The requested resource {resource} was not found")


def unauthenticated() -> TwilioApiError:
    return TwilioApiError(401, 20003, headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})
