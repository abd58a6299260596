from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from app.core.phone import NumberType
from app.core.types import CountryCode, PhoneInput


class PhoneValidationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phone_number: PhoneInput
    country: CountryCode | None = Field(
        default=None, description="Region for a national number (default: the service's)."
    )


class PhoneValidation(BaseModel):
    valid: bool
    reason_code: str | None = Field(
        description="Why it is invalid: `not_a_number`, `invalid_country_code`, `too_short`, "
        "`too_long`, `wrong_length` or `not_assigned`."
    )
    reason: str | None
    e164: str | None
    national_format: str | None
    international_format: str | None
    region: str | None = Field(description="ISO 3166-1 alpha-2.")
    country_code: int | None
    number_type: NumberType | None
    sms_capable: bool
    time_zones: list[str]
