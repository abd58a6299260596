"""The sandbox's fixed settings: whose account it plays and how fast its carrier is."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from app.core.settings import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN

_ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    account_sid: str = SANDBOX_ACCOUNT_SID
    auth_token: str = SANDBOX_AUTH_TOKEN
    # Time from one status to the next (queued → sent → final).
    callback_delay_seconds: float = 0.2
    # What one segment costs, as Twilio writes prices: negative, five decimals.
    price_per_segment: str = "-0.00790"
    # How long a "timeout" fault holds the answer back.
    hang_seconds: float = 30.0
    # How long a status callback may take before it counts as failed (Twilio waits 15 s).
    callback_timeout_seconds: float = 15.0

    def __post_init__(self) -> None:
        if not _ACCOUNT_SID.match(self.account_sid):
            raise ValueError("account_sid must look like AC followed by 32 hex digits")
        if not self.auth_token:
            raise ValueError("auth_token must not be empty")
        if self.callback_delay_seconds < 0 or self.hang_seconds < 0:
            raise ValueError("delays cannot be negative")
        if self.callback_timeout_seconds <= 0:
            raise ValueError("callback_timeout_seconds must be positive")
        try:
            Decimal(self.price_per_segment)
        except InvalidOperation as error:
            raise ValueError("price_per_segment must be a decimal number") from error
