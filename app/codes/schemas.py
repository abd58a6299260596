from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.core.types import CountryCode, PhoneInput, UserId

Code = Annotated[str, StringConstraints(pattern=r"^\d{6}$"), Field(examples=["493027"])]


class CodeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: UserId | None = Field(
        default=None, description="Services (`sms:send`): the user to send a code to."
    )


class PhoneVerificationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phone_number: PhoneInput | None = Field(
        default=None,
        description="A new number for the profile (its verification starts over); by default "
        "the profile's number.",
    )
    country: CountryCode | None = None


class CodeCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: Code
    user_id: UserId | None = Field(
        default=None, description="Services (`sms:send`): the user whose code this is."
    )


class CodeSent(BaseModel):
    """The same answer whether or not the user or number exists: it reveals neither."""

    detail: str = "If the number can receive SMS, a code is on its way."
    expires_in_seconds: int
    resend_after_seconds: int


class CodeVerified(BaseModel):
    verified: bool = True
