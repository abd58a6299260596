from __future__ import annotations

from fastapi import APIRouter

from app.auth.dependencies import CurrentPrincipal
from app.core.deps import SettingsDep
from app.core.errors import problem_responses
from app.core.phone import check_phone_number, display_formats
from app.phone_validation.schemas import PhoneValidation, PhoneValidationRequest

router = APIRouter(
    prefix="/api", tags=["phone numbers"], responses=problem_responses(400, 401, 413, 422)
)


@router.post(
    "/sms/validate-phone",
    response_model=PhoneValidation,
    summary="Check a phone number",
    description="An invalid number is a normal answer (`valid: false` with the reason), "
    "not an error.",
)
async def validate_phone(
    body: PhoneValidationRequest, _: CurrentPrincipal, settings: SettingsDep
) -> PhoneValidation:
    check = check_phone_number(body.phone_number, body.country, settings.default_phone_region)
    national = international = None
    if check.valid and check.e164 is not None:
        national, international = display_formats(check.e164)
    return PhoneValidation(
        valid=check.valid,
        reason_code=check.reason_code,
        reason=check.reason,
        e164=check.e164 if check.valid else None,
        national_format=national,
        international_format=international,
        region=check.region,
        country_code=check.country_code,
        number_type=check.number_type,
        sms_capable=check.sms_capable,
        time_zones=list(check.time_zones),
    )
