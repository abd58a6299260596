"""Services manage the users they act for: /api/users/{user_id}."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Scope
from app.users.models import User

MakeKey = Callable[..., Awaitable[dict[str, str]]]


@pytest.fixture
async def service(make_api_key: MakeKey) -> dict[str, str]:
    return await make_api_key(Scope.USERS_WRITE, name="booking-service")


async def test_put_creates_then_updates(client: httpx.AsyncClient, service: dict[str, str]) -> None:
    created = await client.put(
        "/api/users/u-1",
        json={"phone_number": "+44 7911 123456", "locale": "en-GB", "time_zone": "Europe/London"},
        headers=service,
    )
    assert created.status_code == 201
    assert created.json()["phone_number"] == "+447911123456"
    assert created.json()["time_zone"] == "Europe/London"

    updated = await client.put("/api/users/u-1", json={"locale": "fr"}, headers=service)
    assert updated.status_code == 200
    assert updated.json()["locale"] == "fr"
    assert updated.json()["phone_number"] == "+447911123456"  # left out, so kept

    fetched = await client.get("/api/users/u-1", headers=service)
    assert fetched.json() == updated.json()


async def test_a_service_may_vouch_for_a_number(
    client: httpx.AsyncClient, service: dict[str, str]
) -> None:
    response = await client.put(
        "/api/users/u-2",
        json={"phone_number": "+14155552671", "phone_verified": True},
        headers=service,
    )
    assert response.json()["phone_verified"] is True
    assert response.json()["phone_verified_at"] is not None

    moved = await client.put(
        "/api/users/u-2", json={"phone_number": "+14155550123"}, headers=service
    )
    assert moved.json()["phone_verified"] is False

    vouched = await client.put(
        "/api/users/u-2",
        json={"phone_number": "+14155550123", "phone_verified": True},
        headers=service,
    )
    assert vouched.json()["phone_verified"] is True
    unverified = await client.put("/api/users/u-2", json={"phone_verified": False}, headers=service)
    assert unverified.json()["phone_verified"] is False


async def test_vouching_without_naming_the_number_is_refused(
    client: httpx.AsyncClient, service: dict[str, str]
) -> None:
    await client.put("/api/users/u-3", json={"phone_number": "+14155552671"}, headers=service)

    # Vouching must name the number it vouches for: the user may have just changed theirs.
    response = await client.put("/api/users/u-3", json={"phone_verified": True}, headers=service)

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert "phone_number" in response.json()["detail"]
    fetched = await client.get("/api/users/u-3", headers=service)
    assert fetched.json()["phone_verified"] is False


async def test_unknown_users_are_404(client: httpx.AsyncClient, service: dict[str, str]) -> None:
    fetched = await client.get("/api/users/nobody", headers=service)
    deleted = await client.delete("/api/users/nobody", headers=service)

    assert fetched.status_code == 404
    assert fetched.json()["code"] == "user_not_found"
    assert deleted.status_code == 404


async def test_delete_erases(
    client: httpx.AsyncClient, service: dict[str, str], session: AsyncSession
) -> None:
    await client.put("/api/users/u-4", json={"phone_number": "+14155552671"}, headers=service)

    response = await client.delete("/api/users/u-4", headers=service)

    assert response.status_code == 204
    assert (await client.get("/api/users/u-4", headers=service)).status_code == 404
    assert await session.scalar(select(func.count()).select_from(User)) == 0


async def test_an_invalid_number_is_refused_with_the_reason(
    client: httpx.AsyncClient, service: dict[str, str], session: AsyncSession
) -> None:
    response = await client.put(
        "/api/users/u-5", json={"phone_number": "+1 800 555 0199"}, headers=service
    )

    assert response.status_code == 422
    assert response.json()["code"] == "invalid_phone_number"
    assert "toll free" in response.json()["detail"]
    assert await session.scalar(select(func.count()).select_from(User)) == 0


@pytest.mark.parametrize(
    ("user_id", "status"),
    [
        ("a" * 256, 422),
        ("a" * 255, 201),
        ("with%20space", 422),
        ("auth0|abc123", 201),
        ("nul%00byte", 422),
        ("tab%09", 422),
        ("bell%07", 422),
    ],
)
async def test_user_ids_are_bounded(
    client: httpx.AsyncClient, service: dict[str, str], user_id: str, status: int
) -> None:
    response = await client.put(f"/api/users/{user_id}", json={}, headers=service)

    assert response.status_code == status


async def test_the_scope_is_needed_for_every_method(
    client: httpx.AsyncClient, make_api_key: MakeKey
) -> None:
    reader = await make_api_key(Scope.SMS_READ, Scope.SMS_SEND, Scope.SMS_BULK)

    for method in ("GET", "PUT", "DELETE"):
        response = await client.request(method, "/api/users/u-6", json={}, headers=reader)
        assert response.status_code == 403, method
