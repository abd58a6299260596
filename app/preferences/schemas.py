from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool, model_validator


class PreferencesUpdate(BaseModel):
    """Partial: only the keys present change; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")

    sms_enabled: StrictBool | None = None
    booking_confirmations: StrictBool | None = None
    booking_reminders: StrictBool | None = None
    status_updates: StrictBool | None = None
    payment_confirmations: StrictBool | None = None
    ticket_updates: StrictBool | None = None
    two_factor_auth: StrictBool | None = None
    marketing: StrictBool | None = None

    @model_validator(mode="before")
    @classmethod
    def _refuse_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            nulls = sorted(str(key) for key, value in data.items() if value is None)
            if nulls:
                raise ValueError(f"preferences are true or false, not null: {', '.join(nulls)}")
        return data

    def changes(self) -> dict[str, bool]:
        return self.model_dump(exclude_unset=True)


class Preferences(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    sms_enabled: bool
    booking_confirmations: bool
    booking_reminders: bool
    status_updates: bool
    payment_confirmations: bool
    ticket_updates: bool
    two_factor_auth: bool
    marketing: bool
    updated_at: datetime
