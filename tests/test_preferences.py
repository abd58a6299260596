"""SMS preferences: read and changed by the user (JWT) or by a service for a user, key by key."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Scope
from app.preferences.models import SmsPreferences
from app.users.models import User
from tests.conftest import as_user

MakeApiKey = Callable[..., Awaitable[dict[str, str]]]

OWN = "/api/sms/preferences"
PROFILE = "/api/user/profile"

DEFAULTS = {
    "sms_enabled": True,
    "booking_confirmations": True,
    "booking_reminders": True,
    "status_updates": True,
    "payment_confirmations": True,
    "ticket_updates": True,
    "two_factor_auth": False,
    "marketing": False,
}


def user_preferences(user_id: str) -> str:
    return f"/api/users/{user_id}/preferences"


@pytest.fixture
async def service(make_api_key: MakeApiKey) -> dict[str, str]:
    """Headers of a service holding `users:write`."""
    return await make_api_key(Scope.USERS_WRITE)


def _flags(body: dict[str, object]) -> dict[str, object]:
    """The preferences in a response, without `updated_at`."""
    assert "updated_at" in body
    return {key: value for key, value in body.items() if key != "updated_at"}


async def _own(client: httpx.AsyncClient, user_id: str) -> dict[str, object]:
    response = await client.get(OWN, headers=as_user(user_id))
    assert response.status_code == 200, response.text
    return _flags(response.json())


async def _count(session: AsyncSession, model: type[User | SmsPreferences]) -> int:
    return (await session.execute(select(func.count()).select_from(model))).scalar_one()


# The user's own preferences


async def test_a_new_user_gets_the_defaults(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    response = await client.get(OWN, headers=as_user("amy"))

    assert response.status_code == 200, response.text
    assert _flags(response.json()) == DEFAULTS
    assert await _count(session, User) == 1
    assert await _count(session, SmsPreferences) == 1


async def test_put_changes_only_the_keys_it_names(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    response = await client.put(
        OWN, json={"marketing": True, "booking_reminders": False}, headers=as_user("ben")
    )

    assert response.status_code == 200, response.text
    expected = {**DEFAULTS, "marketing": True, "booking_reminders": False}
    assert _flags(response.json()) == expected
    assert await _own(client, "ben") == expected

    second = await client.put(OWN, json={"two_factor_auth": True}, headers=as_user("ben"))
    expected["two_factor_auth"] = True
    assert _flags(second.json()) == expected  # the first change stands

    row = await session.scalar(
        select(SmsPreferences)
        .join(User, User.id == SmsPreferences.user_id)
        .where(User.external_id == "ben")
    )
    assert row is not None
    await session.refresh(row)
    assert (row.marketing, row.booking_reminders, row.two_factor_auth) == (True, False, True)
    assert row.sms_enabled is True


@pytest.mark.parametrize("key", sorted(DEFAULTS))
async def test_every_preference_can_be_flipped_alone(client: httpx.AsyncClient, key: str) -> None:
    flipped = not DEFAULTS[key]

    response = await client.put(OWN, json={key: flipped}, headers=as_user("cal"))

    assert response.status_code == 200, response.text
    assert await _own(client, "cal") == {**DEFAULTS, key: flipped}


async def test_an_empty_put_changes_nothing(client: httpx.AsyncClient) -> None:
    await client.put(OWN, json={"status_updates": False}, headers=as_user("dee"))

    response = await client.put(OWN, json={}, headers=as_user("dee"))

    assert response.status_code == 200, response.text
    assert _flags(response.json()) == {**DEFAULTS, "status_updates": False}
    assert await _own(client, "dee") == {**DEFAULTS, "status_updates": False}


async def test_a_put_by_a_new_user_creates_them(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    response = await client.put(OWN, json={"marketing": True}, headers=as_user("eli"))

    assert response.status_code == 200, response.text
    assert _flags(response.json()) == {**DEFAULTS, "marketing": True}
    assert await session.scalar(select(User.external_id)) == "eli"


async def test_one_users_change_does_not_touch_another(client: httpx.AsyncClient) -> None:
    await client.get(OWN, headers=as_user("fay"))

    await client.put(OWN, json={"sms_enabled": False, "marketing": True}, headers=as_user("gus"))

    assert await _own(client, "fay") == DEFAULTS
    assert await _own(client, "gus") == {**DEFAULTS, "sms_enabled": False, "marketing": True}


async def test_the_profile_sms_enabled_follows_the_preference(client: httpx.AsyncClient) -> None:
    off = await client.put(OWN, json={"sms_enabled": False}, headers=as_user("hal"))
    assert off.status_code == 200

    profile = await client.get(PROFILE, headers=as_user("hal"))
    assert profile.json()["sms_enabled"] is False

    back_on = await client.patch(PROFILE, json={"sms_enabled": True}, headers=as_user("hal"))
    assert back_on.json()["sms_enabled"] is True
    assert (await _own(client, "hal"))["sms_enabled"] is True


# Refused input


@pytest.mark.parametrize(
    ("payload", "field", "error_type"),
    [
        ({"marketing_emails": True}, "body.marketing_emails", "extra_forbidden"),
        ({"marketing": True, "marketing_emails": True}, "body.marketing_emails", "extra_forbidden"),
        ({"marketing": None}, "body", "value_error"),
        ({"marketing": True, "sms_enabled": None}, "body", "value_error"),
        ({"marketing": "true"}, "body.marketing", "bool_type"),
        ({"marketing": 1}, "body.marketing", "bool_type"),
        ({"sms_enabled": 0}, "body.sms_enabled", "bool_type"),
        ({"sms_enabled": "false"}, "body.sms_enabled", "bool_type"),
        ({"sms_enabled": "off"}, "body.sms_enabled", "bool_type"),
        ({"sms_enabled": [True]}, "body.sms_enabled", "bool_type"),
        ([{"marketing": True}], "body", "model_attributes_type"),
    ],
)
async def test_bad_values_are_422_and_change_nothing(
    client: httpx.AsyncClient, payload: object, field: str, error_type: str
) -> None:
    await client.put(OWN, json={"ticket_updates": False}, headers=as_user("ida"))

    response = await client.put(OWN, json=payload, headers=as_user("ida"))

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert {"field": field, "type": error_type} in [
        {"field": error["field"], "type": error["type"]} for error in problem["errors"]
    ]
    assert await _own(client, "ida") == {**DEFAULTS, "ticket_updates": False}


async def test_null_is_refused_naming_the_key(client: httpx.AsyncClient) -> None:
    response = await client.put(OWN, json={"booking_reminders": None}, headers=as_user("jay"))

    assert response.status_code == 422
    assert "booking_reminders" in response.json()["detail"]


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.put(
        OWN,
        content=b'{"marketing": tru',
        headers={**as_user("kay"), "content-type": "application/json"},
    )

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "malformed_json"


# Who may


async def test_own_preferences_need_a_token(client: httpx.AsyncClient) -> None:
    for response in [
        await client.get(OWN),
        await client.put(OWN, json={"marketing": True}),
    ]:
        assert response.status_code == 401
        assert response.json()["code"] == "missing_credentials"


async def test_own_preferences_are_for_end_users_not_services(
    client: httpx.AsyncClient, session: AsyncSession, service: dict[str, str]
) -> None:
    response = await client.put(OWN, json={"marketing": True}, headers=service)

    assert response.status_code == 403
    assert response.json()["code"] == "user_token_required"
    assert await _count(session, User) == 0


# Services, for a user


async def test_a_service_reads_and_changes_a_users_preferences(
    client: httpx.AsyncClient, service: dict[str, str]
) -> None:
    await client.put(OWN, json={"marketing": True}, headers=as_user("lea"))

    read = await client.get(user_preferences("lea"), headers=service)
    assert read.status_code == 200, read.text
    assert _flags(read.json()) == {**DEFAULTS, "marketing": True}

    changed = await client.put(
        user_preferences("lea"), json={"two_factor_auth": True}, headers=service
    )
    assert changed.status_code == 200, changed.text
    expected = {**DEFAULTS, "marketing": True, "two_factor_auth": True}
    assert _flags(changed.json()) == expected
    assert await _own(client, "lea") == expected  # the user sees the service's change


async def test_a_user_created_by_a_service_has_the_defaults(
    client: httpx.AsyncClient, service: dict[str, str]
) -> None:
    created = await client.put("/api/users/max", json={}, headers=service)
    assert created.status_code == 201, created.text

    response = await client.get(user_preferences("max"), headers=service)

    assert response.status_code == 200
    assert _flags(response.json()) == DEFAULTS


async def test_a_service_put_is_partial_too(
    client: httpx.AsyncClient, service: dict[str, str]
) -> None:
    await client.put("/api/users/ned", json={}, headers=service)
    await client.put(
        user_preferences("ned"), json={"payment_confirmations": False}, headers=service
    )

    empty = await client.put(user_preferences("ned"), json={}, headers=service)
    assert _flags(empty.json()) == {**DEFAULTS, "payment_confirmations": False}

    refused = await client.put(
        user_preferences("ned"), json={"marketing_emails": True}, headers=service
    )
    assert refused.status_code == 422
    assert "body.marketing_emails" in [error["field"] for error in refused.json()["errors"]]
    kept = await client.get(user_preferences("ned"), headers=service)
    assert _flags(kept.json()) == {**DEFAULTS, "payment_confirmations": False}


async def test_an_unknown_user_is_404_and_is_not_created(
    client: httpx.AsyncClient, session: AsyncSession, service: dict[str, str]
) -> None:
    read = await client.get(user_preferences("nobody"), headers=service)
    changed = await client.put(
        user_preferences("nobody"), json={"marketing": True}, headers=service
    )

    for response in (read, changed):
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "user_not_found"
    assert await _count(session, User) == 0
    assert await _count(session, SmsPreferences) == 0


async def test_a_service_needs_users_write(
    client: httpx.AsyncClient, make_api_key: MakeApiKey
) -> None:
    await client.put(OWN, json={"marketing": True}, headers=as_user("oz"))
    headers = await make_api_key(Scope.SMS_SEND, Scope.SMS_READ)

    read = await client.get(user_preferences("oz"), headers=headers)
    changed = await client.put(user_preferences("oz"), json={"marketing": False}, headers=headers)

    for response in (read, changed):
        assert response.status_code == 403
        assert response.json()["code"] == "missing_scope"
    assert (await _own(client, "oz"))["marketing"] is True


async def test_one_user_cannot_change_anothers_preferences(client: httpx.AsyncClient) -> None:
    await client.get(OWN, headers=as_user("pam"))

    response = await client.put(
        user_preferences("pam"), json={"sms_enabled": False}, headers=as_user("quin")
    )

    assert response.status_code == 403
    assert response.json()["code"] == "missing_scope"
    assert await _own(client, "pam") == DEFAULTS


async def test_an_admin_user_may_change_anyones_preferences(client: httpx.AsyncClient) -> None:
    await client.get(OWN, headers=as_user("rae"))

    response = await client.put(
        user_preferences("rae"), json={"sms_enabled": False}, headers=as_user("root", admin=True)
    )

    assert response.status_code == 200, response.text
    assert await _own(client, "rae") == {**DEFAULTS, "sms_enabled": False}


async def test_service_endpoints_need_a_token(client: httpx.AsyncClient) -> None:
    response = await client.get(user_preferences("sam"))

    assert response.status_code == 401
    assert response.json()["code"] == "missing_credentials"


async def test_a_user_id_with_whitespace_is_422(
    client: httpx.AsyncClient, service: dict[str, str]
) -> None:
    response = await client.get(user_preferences("s%20am"), headers=service)

    assert response.status_code == 422
    assert "path.user_id" in [error["field"] for error in response.json()["errors"]]
