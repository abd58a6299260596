"""Phone numbers: any reasonable spelling parsed to E.164, SMS capability judged, numbers masked."""

from __future__ import annotations

import re

import phonenumbers
import pytest
from hypothesis import HealthCheck, assume, given, reject, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from app.core.phone import (
    NUMBER_TYPES,
    InvalidPhoneNumber,
    NumberType,
    check_phone_number,
    display_formats,
    mask_phone,
    mask_phones_in,
    normalize_sms_number,
)

PROPERTY_SETTINGS = settings(
    deadline=None, max_examples=100, suppress_health_check=[HealthCheck.filter_too_much]
)


# --- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_number", "country", "e164", "region", "number_type"),
    [
        ("+1 (415) 555-2671", None, "+14155552671", "US", NumberType.FIXED_LINE_OR_MOBILE),
        ("(415) 555-2671", None, "+14155552671", "US", NumberType.FIXED_LINE_OR_MOBILE),
        ("+1.415.555.2671", None, "+14155552671", "US", NumberType.FIXED_LINE_OR_MOBILE),
        # Ofcom's drama range: libphonenumber calls it invalid, we take it as a GB mobile.
        ("00 44 7700 900123", None, "+447700900123", "GB", NumberType.MOBILE),
        ("07700 900123", "GB", "+447700900123", "GB", NumberType.MOBILE),
        ("07911 123456", "GB", "+447911123456", "GG", NumberType.MOBILE),
        ("06 12 34 56 78", "fr", "+33612345678", "FR", NumberType.MOBILE),
        ("0033 6 12 34 56 78", None, "+33612345678", "FR", NumberType.MOBILE),
        ("  +14155552671  ", None, "+14155552671", "US", NumberType.FIXED_LINE_OR_MOBILE),
    ],
)
def test_reasonable_formats_are_normalised_to_e164(
    given_number: str, country: str | None, e164: str, region: str, number_type: NumberType
) -> None:
    check = normalize_sms_number(given_number, country, "US")

    assert check.valid
    assert check.sms_capable
    assert check.e164 == e164
    assert check.region == region
    assert check.number_type is number_type
    assert check.reason_code is None


def test_a_national_number_is_read_in_the_given_country_not_the_default_region() -> None:
    in_gb = check_phone_number("020 7946 0018", "GB", "US")
    assert in_gb.e164 == "+442079460018"
    assert in_gb.country_code == 44

    # Without the country the default region applies: the same digits mean something else.
    in_us = check_phone_number("020 7946 0018", None, "US")
    assert in_us.e164 != "+442079460018"


def test_the_default_region_is_used_for_national_numbers_without_a_country() -> None:
    check = check_phone_number("06 12 34 56 78", None, "FR")

    assert check.e164 == "+33612345678"
    assert check.region == "FR"


def test_the_formats_and_time_zones_of_a_valid_number_are_reported() -> None:
    check = check_phone_number("+1 (415) 555-2671", None, "US")

    assert display_formats("+14155552671") == ("(415) 555-2671", "+1 415-555-2671")
    assert check.country_code == 1
    assert check.time_zones == ("America/Los_Angeles",)


def test_the_drama_range_has_no_unknown_time_zone() -> None:
    check = check_phone_number("+447700900123", None, "US")

    assert "Etc/Unknown" not in check.time_zones


# --- valid but not for SMS -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "number_type"),
    [
        ("+1 900 555 0123", NumberType.PREMIUM_RATE),
        ("+44 871 123 4567", NumberType.PREMIUM_RATE),
        ("+1 800 555 0199", NumberType.TOLL_FREE),
        ("+44 800 123 4567", NumberType.TOLL_FREE),
        ("+33 884 01 23 45", NumberType.SHARED_COST),
        ("+34 901 123 456", NumberType.SHARED_COST),
        ("+44 20 7946 0018", NumberType.FIXED_LINE),
        ("+33 1 23 45 67 89", NumberType.FIXED_LINE),
        ("+44 7640 123456", NumberType.PAGER),
        ("+44 55 1234 5678", NumberType.UAN),
    ],
)
def test_valid_numbers_that_cannot_take_sms_are_refused_as_not_sms_capable(
    number: str, number_type: NumberType
) -> None:
    check = check_phone_number(number, None, "US")
    assert check.valid
    assert check.number_type is number_type
    assert not check.sms_capable

    with pytest.raises(InvalidPhoneNumber) as raised:
        normalize_sms_number(number, None, "US")

    assert raised.value.reason_code == "not_sms_capable"
    assert number_type.value.replace("_", " ") in raised.value.reason


@pytest.mark.parametrize(
    ("number", "number_type"),
    [
        ("+447911123456", NumberType.MOBILE),
        ("+14155552671", NumberType.FIXED_LINE_OR_MOBILE),
        ("+44 56 1234 5678", NumberType.VOIP),
    ],
)
def test_mobile_and_voip_numbers_take_sms(number: str, number_type: NumberType) -> None:
    check = normalize_sms_number(number, None, "US")

    assert check.number_type is number_type
    assert check.sms_capable


@pytest.mark.parametrize(
    "number",
    ["+15005550006", "+15005550001", "+15005550007", "+15005550008", "+15005550009"],
)
def test_twilio_magic_test_numbers_are_sms_capable_personal_numbers(number: str) -> None:
    check = normalize_sms_number(number, None, "US")

    assert check.e164 == number
    assert check.number_type is NumberType.PERSONAL_NUMBER
    assert check.sms_capable


# --- invalid input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason_code"),
    [
        ("hello", "not_a_number"),
        ("+1", "not_a_number"),
        ("", "not_a_number"),
        ("   ", "not_a_number"),
        ("12", "too_short"),
        ("+1 415 555 267", "too_short"),
        ("+1 415 555 26711234", "too_long"),
        ("+49 1234567890123456789", "too_long"),
        ("+999 123 456 789", "invalid_country_code"),
        ("+44 7911", "not_assigned"),
    ],
)
def test_invalid_input_is_refused_with_a_reason_code(raw: str, reason_code: str) -> None:
    check = check_phone_number(raw, None, "US")
    assert not check.valid
    assert not check.sms_capable
    assert check.reason_code == reason_code
    assert check.reason
    assert check.number_type is None

    with pytest.raises(InvalidPhoneNumber) as raised:
        normalize_sms_number(raw, None, "US")

    assert raised.value.reason_code == reason_code
    assert raised.value.reason == check.reason
    assert str(raised.value) == check.reason


def _padded(length: int) -> str:
    """+14155552671 with inner spaces, `length` characters long."""
    return "+1" + " " * (length - len("+14155552671")) + "4155552671"


def test_input_of_64_characters_is_accepted_and_of_65_refused() -> None:
    at_limit, over_limit = _padded(64), _padded(65)
    assert (len(at_limit), len(over_limit)) == (64, 65)

    assert check_phone_number(at_limit, None, "US").e164 == "+14155552671"

    refused = check_phone_number(over_limit, None, "US")
    assert not refused.valid
    assert refused.reason_code == "not_a_number"
    assert refused.e164 is None
    with pytest.raises(InvalidPhoneNumber) as raised:
        normalize_sms_number("1" * 65, None, "US")
    assert raised.value.reason_code == "not_a_number"


def test_surrounding_whitespace_does_not_count_towards_the_limit() -> None:
    assert check_phone_number(" " * 100 + "+14155552671\n", None, "US").e164 == "+14155552671"


# --- masking ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("e164", "masked"),
    [
        ("+14155552612", "+1415*****12"),
        ("+447700900123", "+4477******23"),
        ("+12345678", "+1******8"),
        ("+123456", "+1****6"),
    ],
)
def test_mask_phone(e164: str, masked: str) -> None:
    assert mask_phone(e164) == masked


def test_mask_phones_in_masks_every_number_and_leaves_other_text_alone() -> None:
    text = "to +14155552612, cc +447700900123 (retry 3 of 12); order #12345678 +12 ok"

    assert mask_phones_in(text) == (
        "to +1415*****12, cc +4477******23 (retry 3 of 12); order #12345678 +12 ok"
    )


def test_mask_phones_in_leaves_text_without_numbers_unchanged() -> None:
    text = "nothing to see: 2024-01-02 12:00:00, +, ++1, +0123456789, id=14155552671"

    assert mask_phones_in(text) == text


# --- properties ------------------------------------------------------------------------------

_TYPES = [
    PhoneNumberType.MOBILE,
    PhoneNumberType.FIXED_LINE,
    PhoneNumberType.FIXED_LINE_OR_MOBILE,
    PhoneNumberType.TOLL_FREE,
    PhoneNumberType.PREMIUM_RATE,
    PhoneNumberType.SHARED_COST,
    PhoneNumberType.VOIP,
    PhoneNumberType.PERSONAL_NUMBER,
]
_COUNTRY_CODES = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
_DIGITS = st.text(alphabet="0123456789", min_size=1, max_size=14)


@st.composite
def _near_example_numbers(draw: st.DrawFn) -> str:
    """An example number of some region and type with its last digits made random."""
    region = draw(st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS)))
    example = phonenumbers.example_number_for_type(region, draw(st.sampled_from(_TYPES)))
    if example is None:
        reject()
    e164 = phonenumbers.format_number(example, PhoneNumberFormat.E164)
    tail = draw(st.text(alphabet="0123456789", min_size=0, max_size=4))
    return e164[: len(e164) - len(tail)] + tail


_PLUS_DIGITS = st.one_of(
    _near_example_numbers(),
    st.builds(lambda cc, rest: f"+{cc}{rest}", st.sampled_from(_COUNTRY_CODES), _DIGITS),
    st.builds(lambda rest: "+" + rest, _DIGITS),
)


@PROPERTY_SETTINGS
@given(_PLUS_DIGITS)
def test_checking_an_e164_result_again_gives_the_same_number(raw: str) -> None:
    first = check_phone_number(raw, None, "US")
    assume(first.valid)
    assert first.e164 is not None
    assert re.fullmatch(r"\+[1-9]\d+", first.e164)

    again = check_phone_number(first.e164, None, "GB")

    assert again.valid
    assert again.e164 == first.e164
    assert again.number_type is first.number_type
    assert again.region == first.region
    assert again.sms_capable == first.sms_capable
    _, international = display_formats(first.e164)
    assert check_phone_number(international, None, "FR").e164 == first.e164


@settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.filter_too_much])
@given(_PLUS_DIGITS)
def test_validity_region_type_and_zones_are_libphonenumbers_public_answers(raw: str) -> None:
    """check_phone_number finds the region once (phone.py's _region_and_type) where the public
    functions each find it again: its answers must be theirs."""
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        reject()
    assume(not number.extension)
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    assume(not re.fullmatch(r"\+447700900\d{3}", e164))  # our drama-range exception

    check = check_phone_number(raw, None, "US")

    assert check.valid == phonenumbers.is_valid_number(number)
    if check.valid:
        zones = phonenumbers.timezone.time_zones_for_number(number)
        assert check.region == phonenumbers.region_code_for_number(number)
        assert check.number_type == NUMBER_TYPES.get(
            phonenumbers.number_type(number), NumberType.UNKNOWN
        )
        assert check.time_zones == tuple(zone for zone in zones if zone != "Etc/Unknown")


@PROPERTY_SETTINGS
@given(st.from_regex(r"\+[1-9][0-9]{0,14}", fullmatch=True))
def test_mask_phone_keeps_the_length_and_reveals_at_most_seven_digits(e164: str) -> None:
    masked = mask_phone(e164)

    assert len(masked) == len(e164)
    assert sum(char.isdigit() for char in masked) <= 7
    for original, shown in zip(e164, masked, strict=True):
        assert shown in (original, "*")
    if len(e164) > 10:
        assert masked[-2:] == e164[-2:]
        assert masked[:5] == e164[:5]
    elif len(e164) > 3:
        assert sum(char.isdigit() for char in masked) == 2


_E164 = st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True)
_WORDS = st.text(
    alphabet=st.characters(blacklist_categories=["Nd", "Cs"], blacklist_characters="+*"),
    max_size=12,
)
_SEPARATORS = st.sampled_from(["", " ", ", ", "\n", "(", ")", ":", "=", "/", "tel:"])


@PROPERTY_SETTINGS
@given(st.lists(st.tuples(_WORDS, _SEPARATORS, _E164, _SEPARATORS), min_size=1, max_size=6))
def test_mask_phones_in_leaves_no_number_in_clear(
    parts: list[tuple[str, str, str, str]],
) -> None:
    text = "".join(word + before + number + after for word, before, number, after in parts)

    masked = mask_phones_in(text)

    for _, _, number, _ in parts:
        assert number not in masked
    words_only = "".join(word + before + after for word, before, _, after in parts)
    assert re.sub(r"\+[0-9*]+", "", masked) == words_only
