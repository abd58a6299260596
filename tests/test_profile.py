"""The signed-in user's profile: created on first use, numbers normalised, bad input refused."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.preferences.models import SmsPreferences
from app.users.models import User
from tests.conftest import as_user

PROFILE = "/api/user/profile"


async def test_first_get_creates_an_empty_profile_with_defaults(client: httpx.AsyncClient) -> None:
    response = await client.get(PROFILE, headers=as_user("alice"))

    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == "alice"
    assert body["phone_number"] is None
    assert body["phone_verified"] is False
    assert body["sms_enabled"] is True
    assert body["locale"] == "en"
    assert body["time_zone"] is None


@pytest.mark.parametrize(
    ("given", "country", "e164", "region"),
    [
        ("+1 (415) 555-2671", None, "+14155552671", "US"),
        ("00 44 7700 900123", None, "+447700900123", "GB"),
        ("07911 123456", "GB", "+447911123456", "GG"),
        ("06 12 34 56 78", "fr", "+33612345678", "FR"),
        ("(415) 555-2671", None, "+14155552671", "US"),
    ],
)
async def test_numbers_in_any_reasonable_format_are_stored_as_e164(
    client: httpx.AsyncClient, given: str, country: str | None, e164: str, region: str
) -> None:
    payload: dict[str, object] = {"phone_number": given}
    if country:
        payload["country"] = country

    response = await client.patch(PROFILE, json=payload, headers=as_user("bob"))

    assert response.status_code == 200, response.text
    assert response.json()["phone_number"] == e164
    assert response.json()["phone_country"] == region
    assert (await client.get(PROFILE, headers=as_user("bob"))).json()["phone_number"] == e164


async def test_post_updates_like_patch(client: httpx.AsyncClient) -> None:
    response = await client.post(
        PROFILE,
        json={"phone_number": "+14155552671", "locale": "fr-ca", "time_zone": "America/Toronto"},
        headers=as_user("carol"),
    )

    assert response.status_code == 200
    assert response.json()["locale"] == "fr-CA"
    assert response.json()["time_zone"] == "America/Toronto"

    partial = await client.post(PROFILE, json={"sms_enabled": False}, headers=as_user("carol"))
    assert partial.json()["sms_enabled"] is False
    assert partial.json()["phone_number"] == "+14155552671"
    assert partial.json()["locale"] == "fr-CA"


@pytest.mark.parametrize(
    ("number", "reason_code"),
    [
        ("+1 900 555 0123", "not_sms_capable"),  # premium rate
        ("+1 800 555 0199", "not_sms_capable"),  # toll free
        ("+44 871 123 4567", "not_sms_capable"),  # premium rate (UK 0871)
        ("12", "too_short"),
        ("hello", "not_a_number"),
        ("+999 123 456 789", "invalid_country_code"),
        ("+1 415 555 26711234", "too_long"),
        ("+1 415 555 2671 ext. 1234", "has_extension"),
        ("+870 301 234 567", "non_geographic"),  # Inmarsat: no country, a pumping favourite
    ],
)
async def test_a_number_that_cannot_take_sms_is_refused_with_the_reason(
    client: httpx.AsyncClient, session: AsyncSession, number: str, reason_code: str
) -> None:
    await client.patch(PROFILE, json={"phone_number": "+14155552671"}, headers=as_user("dave"))

    response = await client.patch(PROFILE, json={"phone_number": number}, headers=as_user("dave"))

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "invalid_phone_number"
    assert problem["errors"] == [
        {"field": "body.phone_number", "message": problem["detail"], "type": reason_code}
    ]
    kept = await client.get(PROFILE, headers=as_user("dave"))
    assert kept.json()["phone_number"] == "+14155552671"


async def test_changing_the_number_clears_its_verification(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await client.patch(PROFILE, json={"phone_number": "+14155552671"}, headers=as_user("erin"))
    await _mark_verified(session, "erin")

    same = await client.patch(
        PROFILE, json={"phone_number": "(415) 555-2671"}, headers=as_user("erin")
    )
    assert same.json()["phone_verified"] is True  # the same number, written differently

    changed = await client.patch(
        PROFILE, json={"phone_number": "+14155550123"}, headers=as_user("erin")
    )
    assert changed.json()["phone_verified"] is False
    assert changed.json()["phone_verified_at"] is None


async def test_null_removes_the_number(client: httpx.AsyncClient, session: AsyncSession) -> None:
    await client.patch(PROFILE, json={"phone_number": "+14155552671"}, headers=as_user("fay"))

    response = await client.patch(PROFILE, json={"phone_number": None}, headers=as_user("fay"))

    assert response.json()["phone_number"] is None
    user = await _user(session, "fay")
    assert user.phone_encrypted is None
    assert user.phone_index is None


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"phone_number": 4155552671}, "body.phone_number"),
        ({"sms_enabled": "yes"}, "body.sms_enabled"),
        ({"sms_enabled": None}, "body"),
        ({"locale": "english please"}, "body.locale"),
        ({"time_zone": "Mars/Olympus_Mons"}, "body.time_zone"),
        ({"phone_number": "1" * 65}, "body.phone_number"),
        ({"country": "USA", "phone_number": "4155552671"}, "body.country"),
        ({"country": "GB"}, "body"),
        ({"time_zone": "localtime"}, "body.time_zone"),
        ({"nickname": "al"}, "body.nickname"),
        ([1, 2], "body"),
    ],
)
async def test_invalid_fields_are_listed_and_nothing_changes(
    client: httpx.AsyncClient, session: AsyncSession, payload: object, field: str
) -> None:
    await client.patch(PROFILE, json={"locale": "de"}, headers=as_user("gus"))

    response = await client.patch(PROFILE, json=payload, headers=as_user("gus"))

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert field in [error["field"] for error in problem["errors"]]
    assert (await client.get(PROFILE, headers=as_user("gus"))).json()["locale"] == "de"


@pytest.mark.parametrize(
    "body",
    [b'{"phone_number": "+1415', b'{"phone_number": "\xff"}', b"[" * 20_000 + b"]" * 20_000],
)
async def test_malformed_json_is_a_400_problem(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.patch(
        PROFILE, content=body, headers={**as_user("hal"), "content-type": "application/json"}
    )

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "malformed_json"


async def test_a_failed_update_writes_nothing_at_all(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    # sms_enabled is valid, the number is not: neither may be applied.
    response = await client.patch(
        PROFILE,
        json={"sms_enabled": False, "phone_number": "+1 900 555 0123"},
        headers=as_user("ivy"),
    )

    assert response.status_code == 422
    assert await session.scalar(select(func.count()).select_from(User)) == 0
    assert await session.scalar(select(func.count()).select_from(SmsPreferences)) == 0


async def test_delete_erases_the_user_and_everything_about_them(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await client.patch(PROFILE, json={"phone_number": "+14155552671"}, headers=as_user("jo"))

    response = await client.delete(PROFILE, headers=as_user("jo"))

    assert response.status_code == 204
    assert await session.scalar(select(func.count()).select_from(User)) == 0
    assert await session.scalar(select(func.count()).select_from(SmsPreferences)) == 0
    again = await client.delete(PROFILE, headers=as_user("jo"))
    assert again.status_code == 404
    assert again.json()["code"] == "user_not_found"


async def test_a_user_only_ever_sees_their_own_profile(client: httpx.AsyncClient) -> None:
    await client.patch(PROFILE, json={"phone_number": "+14155552671"}, headers=as_user("kim"))

    other = await client.get(PROFILE, headers=as_user("lee"))
    assert other.json()["user_id"] == "lee"
    assert other.json()["phone_number"] is None

    by_id = await client.get("/api/users/kim", headers=as_user("lee"))
    assert by_id.status_code == 403
    assert by_id.json()["code"] == "missing_scope"


async def _user(session: AsyncSession, external_id: str) -> User:
    user = await session.scalar(select(User).where(User.external_id == external_id))
    assert user is not None
    await session.refresh(user)
    return user


async def _mark_verified(session: AsyncSession, external_id: str) -> None:
    user = await _user(session, external_id)
    user.phone_verified_at = func.now()
    await session.commit()
