from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from app.core.types import CountryCode, Locale, PhoneInput, TimeZone

_NOT_NULLABLE = ("sms_enabled", "locale", "phone_verified")


class ProfileUpdate(BaseModel):
    """Partial: only the fields present change. `phone_number: null` removes the number."""

    model_config = ConfigDict(extra="forbid")

    phone_number: PhoneInput | None = None
    country: CountryCode | None = Field(
        default=None, description="Region for a national `phone_number` (default: the service's)."
    )
    sms_enabled: StrictBool | None = Field(default=None, description="Master switch for SMS.")
    locale: Locale | None = None
    time_zone: TimeZone | None = Field(
        default=None, description="`null` falls back to the number's time zone."
    )

    @model_validator(mode="before")
    @classmethod
    def _refuse_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in _NOT_NULLABLE:
                if name in data and data[name] is None:
                    raise ValueError(f"`{name}` cannot be null")
        return data

    @model_validator(mode="after")
    def _country_goes_with_a_number(self) -> ProfileUpdate:
        if self.country is not None and self.phone_number is None:
            raise ValueError("`country` only says how to read `phone_number`: send both")
        return self


class UserUpsert(ProfileUpdate):
    """For services acting for their users: fields left out keep their current value."""

    phone_verified: StrictBool | None = Field(
        default=None,
        description="`true` vouches for the `phone_number` sent with it (required then), "
        "`false` clears the verification.",
    )

    @model_validator(mode="after")
    def _vouch_for_a_given_number(self) -> UserUpsert:
        # Vouching for "whatever number the user has now" could verify a number the user
        # changed a moment ago, one the service never checked.
        if self.phone_verified and self.phone_number is None:
            raise ValueError("`phone_verified: true` needs the `phone_number` it vouches for")
        return self


class Profile(BaseModel):
    user_id: str
    phone_number: str | None = Field(description="E.164, e.g. `+14155552671`.")
    phone_country: str | None
    phone_verified: bool
    phone_verified_at: datetime | None
    sms_enabled: bool
    locale: str
    time_zone: str | None
    created_at: datetime
    updated_at: datetime


class ErasureRecord(BaseModel):
    """That a user was erased. The record holds only a keyed hash of the id, so it answers
    for an id one already knows and cannot list who was erased."""

    user_id: str = Field(description="The id asked about.")
    erased_at: datetime
    requested_by: str = Field(
        description="`api_key:<id>` or `user:<id>` (a service or admin), `self` (the user), "
        "`cli` (an operator), or `erased-user` (one who has since been erased)."
    )
    messages_anonymised: int = Field(
        description="Messages that lost the user, number and body (kept for the counts)."
    )
