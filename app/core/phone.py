"""Phone numbers: parse any reasonable input into E.164, judge whether it can take SMS, mask it."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import StrEnum

import phonenumbers
from phonenumbers import (
    NumberParseException,
    PhoneMetadata,
    PhoneNumber,
    PhoneNumberFormat,
    PhoneNumberType,
    ValidationResult,
    is_number_type_geographical,
)
from phonenumbers import timezone as phone_timezone

# Not exported: the type of a national number under a region's patterns, which number_type and
# is_valid_number both end in (see _region_and_type).
from phonenumbers.phonenumberutil import _number_type_helper


class NumberType(StrEnum):
    MOBILE = "mobile"
    FIXED_LINE = "fixed_line"
    FIXED_LINE_OR_MOBILE = "fixed_line_or_mobile"
    TOLL_FREE = "toll_free"
    PREMIUM_RATE = "premium_rate"
    SHARED_COST = "shared_cost"
    VOIP = "voip"
    PERSONAL_NUMBER = "personal_number"
    PAGER = "pager"
    UAN = "uan"
    VOICEMAIL = "voicemail"
    UNKNOWN = "unknown"


# libphonenumber's types as ours.
NUMBER_TYPES = {
    PhoneNumberType.MOBILE: NumberType.MOBILE,
    PhoneNumberType.FIXED_LINE: NumberType.FIXED_LINE,
    PhoneNumberType.FIXED_LINE_OR_MOBILE: NumberType.FIXED_LINE_OR_MOBILE,
    PhoneNumberType.TOLL_FREE: NumberType.TOLL_FREE,
    PhoneNumberType.PREMIUM_RATE: NumberType.PREMIUM_RATE,
    PhoneNumberType.SHARED_COST: NumberType.SHARED_COST,
    PhoneNumberType.VOIP: NumberType.VOIP,
    PhoneNumberType.PERSONAL_NUMBER: NumberType.PERSONAL_NUMBER,
    PhoneNumberType.PAGER: NumberType.PAGER,
    PhoneNumberType.UAN: NumberType.UAN,
    PhoneNumberType.VOICEMAIL: NumberType.VOICEMAIL,
}

# Types a carrier delivers SMS to. Personal numbers include Twilio's +1 500 555 test range.
SMS_CAPABLE_TYPES = frozenset(
    {
        NumberType.MOBILE,
        NumberType.FIXED_LINE_OR_MOBILE,
        NumberType.VOIP,
        NumberType.PERSONAL_NUMBER,
    }
)

# Ofcom keeps 07700 900000-900999 for drama and testing; libphonenumber calls them invalid,
# but they are the UK's documented example mobiles, so we take them as mobiles.
_FICTIONAL_MOBILES = re.compile(r"^\+447700900\d{3}$")

_MAX_INPUT_LENGTH = 64
_PARSE_REASONS = {
    NumberParseException.INVALID_COUNTRY_CODE: (
        "invalid_country_code",
        "the country code is missing or unknown: start with + and the country code, "
        "or give the country",
    ),
    NumberParseException.NOT_A_NUMBER: ("not_a_number", "this is not a phone number"),
    NumberParseException.TOO_SHORT_AFTER_IDD: ("too_short", "the number is too short"),
    NumberParseException.TOO_SHORT_NSN: ("too_short", "the number is too short"),
    NumberParseException.TOO_LONG: ("too_long", "the number is too long"),
}

_LENGTH_REASONS = {
    ValidationResult.TOO_SHORT: ("too_short", "the number is too short"),
    ValidationResult.TOO_LONG: ("too_long", "the number is too long"),
    ValidationResult.INVALID_LENGTH: ("wrong_length", "the number has the wrong number of digits"),
}


@dataclass(frozen=True, slots=True)
class PhoneCheck:
    """What we know of a number: valid or not (with why), its E.164 form, region and type.
    The formats people read are `display_formats`' (only phone validation shows them)."""

    valid: bool
    reason_code: str | None = None
    reason: str | None = None
    e164: str | None = None
    region: str | None = None
    country_code: int | None = None
    number_type: NumberType | None = None
    time_zones: tuple[str, ...] = ()

    @property
    def sms_capable(self) -> bool:
        return self.valid and self.number_type in SMS_CAPABLE_TYPES


class InvalidPhoneNumber(ValueError):
    def __init__(self, reason_code: str, reason: str) -> None:
        super().__init__(reason)
        self.reason_code = reason_code
        self.reason = reason


# A service sends to the same numbers again and again; parsing one cost a twentieth of the
# CPU of a POST /api/sms/send. The result is immutable and depends only on the arguments.
@functools.lru_cache(maxsize=8192)
def check_phone_number(raw: str, country: str | None, default_region: str) -> PhoneCheck:
    """Parse `raw` (with `country` as the region for national numbers) and describe it."""
    text = raw.strip()
    if not text or len(text) > _MAX_INPUT_LENGTH:
        return PhoneCheck(False, "not_a_number", "give a phone number of at most 64 characters")
    # "00" is the international prefix in most of the world; accept it whatever the region.
    if text.startswith("00"):
        text = "+" + text[2:].lstrip()
    region = (country or default_region).upper()
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as error:
        code, reason = _PARSE_REASONS.get(error.error_type, ("not_a_number", str(error)))
        return PhoneCheck(False, code, reason)

    if number.extension:
        return PhoneCheck(False, "has_extension", "a number with an extension cannot receive SMS")
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    if _FICTIONAL_MOBILES.match(e164):
        return PhoneCheck(
            valid=True,
            e164=e164,
            region="GB",
            country_code=number.country_code,
            number_type=NumberType.MOBILE,
            time_zones=("Europe/London",),
        )
    country_code = number.country_code or 0  # parse always sets it
    region_code, kind = _region_and_type(number, country_code)
    if kind == PhoneNumberType.UNKNOWN:  # as phonenumbers.is_valid_number judges it
        code, reason = _LENGTH_REASONS.get(
            phonenumbers.is_possible_number_with_reason(number),
            ("not_assigned", "no such number is in use in that country"),
        )
        return PhoneCheck(False, code, reason, e164=e164, country_code=country_code)
    if is_number_type_geographical(kind, country_code):
        zones = phone_timezone.time_zones_for_geographical_number(number)
    else:
        zones = phone_timezone.time_zones_for_number(number)
    return PhoneCheck(
        valid=True,
        e164=e164,
        region=region_code,
        country_code=country_code,
        number_type=NUMBER_TYPES.get(kind, NumberType.UNKNOWN),
        time_zones=tuple(zone for zone in zones if zone != "Etc/Unknown"),
    )


def _region_and_type(number: PhoneNumber, country_code: int) -> tuple[str | None, int]:
    """The number's region and type (UNKNOWN: not a valid number), as region_code_for_number,
    is_valid_number and number_type say them, from one look at the region's patterns.
    Each of those public functions finds the region again, the costliest step for the 25
    regions of +1: a US number took ~104 µs to check through them, ~48 µs this way (most of
    a bulk send's acceptance is this). tests/test_phone.py holds this to their answers."""
    region_code = phonenumbers.region_code_for_number(number)
    if region_code is None:
        return None, PhoneNumberType.UNKNOWN
    # The region was found from the country code: is_valid_number_for_region's check that
    # they agree holds by construction.
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region_code)
    if metadata is None:
        return region_code, PhoneNumberType.UNKNOWN
    nsn = phonenumbers.national_significant_number(number)
    return region_code, _number_type_helper(nsn, metadata)


def display_formats(e164: str) -> tuple[str, str]:
    """A valid number as people write it at home and abroad: (national, international)."""
    number = phonenumbers.parse(e164, None)
    return (
        phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL),
        phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL),
    )


def normalize_sms_number(raw: str, country: str | None, default_region: str) -> PhoneCheck:
    """Like `check_phone_number`, but raises unless the number is valid and can take SMS."""
    check = check_phone_number(raw, country, default_region)
    if not check.valid:
        raise InvalidPhoneNumber(check.reason_code or "invalid", check.reason or "invalid number")
    if not check.sms_capable:
        kind = (check.number_type or NumberType.UNKNOWN).value.replace("_", " ")
        raise InvalidPhoneNumber("not_sms_capable", f"a {kind} number cannot receive SMS")
    if check.region is None or len(check.region) != 2:
        # Satellite and other non-geographic numbers (+870, +881…): costly, and the favourite
        # targets of SMS pumping.
        raise InvalidPhoneNumber("non_geographic", "numbers outside any country are not served")
    return check


# Up to 18 digits: libphonenumber accepts a few numbers longer than E.164's 15.
_E164_IN_TEXT = re.compile(r"\+[1-9]\d{6,17}")


def mask_phone(e164: str) -> str:
    """`+14155552612` -> `+1415*****12`: enough to tell numbers apart in logs, not to dial.
    Short numbers show one digit at each end."""
    if len(e164) < 4:
        return "*" * len(e164)
    if len(e164) < 11:
        return e164[:2] + "*" * (len(e164) - 3) + e164[-1:]
    return e164[:5] + "*" * (len(e164) - 7) + e164[-2:]


def mask_phones_in(text: str) -> str:
    return _E164_IN_TEXT.sub(lambda match: mask_phone(match.group(0)), text)
