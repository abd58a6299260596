from __future__ import annotations

from app.core.errors import ServiceError, Unprocessable


class InvalidCode(Unprocessable):
    """Wrong, expired, used, killed by too many tries, or never sent: one answer for all, so
    that it tells nothing about the user, the number or the code."""

    code, title = "invalid_code", "Invalid code"


class RateLimited(ServiceError):
    status, code, title = 429, "rate_limited", "Too many requests"

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(
            f"too many codes requested; retry in {retry_after_seconds} s",
            headers={"Retry-After": str(retry_after_seconds)},
        )
        self.retry_after_seconds = retry_after_seconds
