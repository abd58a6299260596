"""Checking a phone number: any caller may ask; an invalid number is an answer, not an error."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Scope
from app.core.phone import check_phone_number
from app.users.models import User
from tests.conftest import as_user, bearer

MakeApiKey = Callable[..., Awaitable[dict[str, str]]]

VALIDATE = "/api/sms/validate-phone"


async def _validate(
    client: httpx.AsyncClient, body: object, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await client.post(VALIDATE, json=body, headers=headers or as_user("val"))


# Valid numbers


async def test_a_us_number_is_described_in_full(client: httpx.AsyncClient) -> None:
    response = await _validate(client, {"phone_number": "+1 415 555 2671"})

    assert response.status_code == 200, response.text
    assert response.json() == {
        "valid": True,
        "reason_code": None,
        "reason": None,
        "e164": "+14155552671",
        "national_format": "(415) 555-2671",
        "international_format": "+1 415-555-2671",
        "region": "US",
        "country_code": 1,
        "number_type": "fixed_line_or_mobile",
        "sms_capable": True,
        "time_zones": ["America/Los_Angeles"],
    }


@pytest.mark.parametrize(
    "body",
    [
        {"phone_number": "(415) 555-2671"},  # national, the service's default region (US)
        {"phone_number": "415.555.2671", "country": "us"},
        {"phone_number": "  +14155552671  "},
    ],
)
async def test_other_writings_of_the_same_us_number(
    client: httpx.AsyncClient, body: dict[str, str]
) -> None:
    response = await _validate(client, body)

    assert response.status_code == 200, response.text
    assert response.json()["valid"] is True
    assert response.json()["e164"] == "+14155552671"
    assert response.json()["region"] == "US"


@pytest.mark.parametrize(
    "body",
    [
        {"phone_number": "00 44 7911 123456"},
        {"phone_number": "07911 123456", "country": "GB"},
        {"phone_number": "07911 123456", "country": "gb"},
        {"phone_number": "+44 (0)7911 123456"},
    ],
)
async def test_a_uk_mobile_international_or_national(
    client: httpx.AsyncClient, body: dict[str, str]
) -> None:
    response = await _validate(client, body)

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["valid"] is True
    assert result["e164"] == "+447911123456"
    assert result["national_format"] == "07911 123456"
    assert result["international_format"] == "+44 7911 123456"
    assert result["country_code"] == 44
    # libphonenumber places 07911 12xxxx in Guernsey, which shares +44 with the UK.
    assert result["region"] == "GG"
    assert result["number_type"] == "mobile"
    assert result["sms_capable"] is True
    assert "Europe/London" in result["time_zones"]


async def test_without_the_country_a_uk_national_number_is_read_as_us(
    client: httpx.AsyncClient,
) -> None:
    response = await _validate(client, {"phone_number": "07911 123456"})

    assert response.status_code == 200
    assert response.json()["valid"] is False
    assert response.json()["e164"] is None


async def test_the_uk_drama_range_is_a_valid_mobile(client: httpx.AsyncClient) -> None:
    response = await _validate(client, {"phone_number": "07700 900123", "country": "GB"})

    assert response.status_code == 200
    result = response.json()
    assert result["valid"] is True
    assert result["e164"] == "+447700900123"
    assert result["region"] == "GB"
    assert result["number_type"] == "mobile"
    assert result["sms_capable"] is True


async def test_the_uk_drama_range_has_the_uk_time_zone(client: httpx.AsyncClient) -> None:
    response = await _validate(client, {"phone_number": "+44 7700 900123"})

    assert response.json()["time_zones"] == ["Europe/London"]


@pytest.mark.parametrize(
    ("number", "e164", "number_type", "sms_capable"),
    [
        ("+1 900 555 0123", "+19005550123", "premium_rate", False),
        ("+1 800 555 0199", "+18005550199", "toll_free", False),
        ("+44 871 123 4567", "+448711234567", "premium_rate", False),
        ("+44 121 234 5678", "+441212345678", "fixed_line", False),
        ("+44 76 4012 3456", "+447640123456", "pager", False),
        ("+44 56 1234 5678", "+445612345678", "voip", True),
        ("+1 500 555 0006", "+15005550006", "personal_number", True),  # Twilio's test range
    ],
)
async def test_the_number_type_decides_whether_it_takes_sms(
    client: httpx.AsyncClient, number: str, e164: str, number_type: str, sms_capable: bool
) -> None:
    response = await _validate(client, {"phone_number": number})

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["valid"] is True
    assert result["reason_code"] is None
    assert result["reason"] is None
    assert result["e164"] == e164
    assert result["number_type"] == number_type
    assert result["sms_capable"] is sms_capable


# Invalid numbers: a normal answer


@pytest.mark.parametrize(
    ("number", "reason_code"),
    [
        ("hello", "not_a_number"),
        ("12", "too_short"),
        ("+999 123", "invalid_country_code"),
        ("+1 415 555 26711234", "too_long"),
        ("   ", "not_a_number"),
        ("+1 555 555 5555", "not_assigned"),
    ],
)
async def test_an_invalid_number_is_200_with_the_reason(
    client: httpx.AsyncClient, number: str, reason_code: str
) -> None:
    response = await _validate(client, {"phone_number": number})

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["valid"] is False
    assert result["reason_code"] == reason_code
    assert isinstance(result["reason"], str)
    assert result["reason"]
    assert result["e164"] is None
    assert result["national_format"] is None
    assert result["international_format"] is None
    assert result["number_type"] is None
    assert result["sms_capable"] is False
    assert result["time_zones"] == []


async def test_64_characters_is_still_a_number(client: httpx.AsyncClient) -> None:
    padded = "+1 415 555 2671".rjust(64)

    response = await _validate(client, {"phone_number": padded})

    assert response.status_code == 200
    assert response.json()["e164"] == "+14155552671"


# Who may ask


async def test_any_api_key_may_ask_even_one_without_scopes(
    client: httpx.AsyncClient, make_api_key: MakeApiKey
) -> None:
    for headers in [await make_api_key(), await make_api_key(Scope.SMS_SEND)]:
        response = await _validate(client, {"phone_number": "+14155552671"}, headers)

        assert response.status_code == 200, response.text
        assert response.json()["valid"] is True


async def test_asking_stores_nothing(client: httpx.AsyncClient, session: AsyncSession) -> None:
    response = await _validate(client, {"phone_number": "+14155552671"}, as_user("tess"))

    assert response.status_code == 200
    assert await session.scalar(select(func.count()).select_from(User)) == 0


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_credentials"),
        (bearer("not-a-jwt"), "invalid_token"),
        (bearer("smsk_no-such-key"), "invalid_api_key"),
    ],
)
async def test_an_unauthenticated_caller_is_401(
    client: httpx.AsyncClient, headers: dict[str, str], code: str
) -> None:
    response = await client.post(VALIDATE, json={"phone_number": "+14155552671"}, headers=headers)

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    problem = response.json()
    assert problem["status"] == 401
    assert problem["code"] == code
    assert "valid" not in problem


# Bad requests


@pytest.mark.parametrize(
    ("body", "field", "error_type"),
    [
        ({}, "body.phone_number", "missing"),
        ({"country": "US"}, "body.phone_number", "missing"),
        ({"phone_number": "1" * 65}, "body.phone_number", "string_too_long"),
        ({"phone_number": ""}, "body.phone_number", "string_too_short"),
        ({"phone_number": 4155552671}, "body.phone_number", "string_type"),
        ({"phone_number": "+14155552671", "region": "US"}, "body.region", "extra_forbidden"),
        (
            {"phone_number": "4155552671", "country": "USA"},
            "body.country",
            "string_pattern_mismatch",
        ),
    ],
)
async def test_a_bad_request_is_422_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, object], field: str, error_type: str
) -> None:
    response = await _validate(client, body)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert {"field": field, "type": error_type} in [
        {"field": error["field"], "type": error["type"]} for error in problem["errors"]
    ]


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        VALIDATE,
        content=b'{"phone_number": "+1',
        headers={**as_user("val"), "content-type": "application/json"},
    )

    assert response.status_code == 400
    assert response.json()["code"] == "malformed_json"


# The check itself, over the world's example mobiles


def _example_mobile(region: str) -> Any:
    return phonenumbers.example_number_for_type(region, PhoneNumberType.MOBILE)


_REGIONS_WITH_A_MOBILE_EXAMPLE = st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS)).filter(
    lambda region: _example_mobile(region) is not None
)


@settings(max_examples=50, deadline=None)
@given(region=_REGIONS_WITH_A_MOBILE_EXAMPLE)
def test_every_regions_example_mobile_is_valid_written_nationally(region: str) -> None:
    example = _example_mobile(region)
    expected_e164: str = phonenumbers.format_number(example, PhoneNumberFormat.E164)
    national: str = phonenumbers.format_number(example, PhoneNumberFormat.NATIONAL)

    check = check_phone_number(national, region, "US")

    assert check.valid, (region, national, check)
    assert check.e164 == expected_e164
    assert check.country_code == example.country_code
    assert check.sms_capable
    assert check.e164 is not None
    assert check_phone_number(check.e164, None, "US") == check  # idempotent on its own output


def test_the_property_has_regions_to_sample() -> None:
    regions = [r for r in phonenumbers.SUPPORTED_REGIONS if _example_mobile(r) is not None]

    assert len(regions) > 200
    assert "TA" not in regions  # Tristan da Cunha has no example mobile: filtered, not skipped
