"""Every error, expected or not, is problem+json with a stable code."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
from asgi_lifespan import LifespanManager
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.deps import get_sessionmaker
from app.core.settings import Settings
from app.main import create_app
from tests.conftest import as_user


async def test_an_unknown_route_is_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/nothing-here")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "urn:sms-service:problem:not_found",
        "title": "Not Found",
        "status": 404,
        "detail": "Not Found",
        "code": "not_found",
    }


async def test_a_wrong_method_is_405_problem(client: httpx.AsyncClient) -> None:
    response = await client.post("/healthz")

    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert "GET" in response.headers["allow"]


async def test_an_oversized_body_is_413_before_it_is_read(client: httpx.AsyncClient) -> None:
    body = b'{"phone_number": "' + b"1" * (70 * 1024) + b'"}'

    response = await client.patch(
        "/api/user/profile",
        content=body,
        headers={**as_user("ann"), "content-type": "application/json"},
    )

    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


async def test_an_oversized_streamed_body_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"phone_number": "'
        for _ in range(20):
            yield b"1" * 8192
        yield b'"}'

    response = await client.patch(
        "/api/user/profile",
        content=chunks(),
        headers={**as_user("ann"), "content-type": "application/json"},
    )

    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


async def test_an_unexpected_failure_is_a_500_problem_without_internals(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    app = create_app(settings)
    app.dependency_overrides[get_sessionmaker] = lambda: sessionmaker

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/boom")

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "internal_error"
    assert "hunter2" not in response.text


async def test_validation_errors_list_every_field(client: httpx.AsyncClient) -> None:
    response = await client.put(
        "/api/sms/preferences",
        json={"marketing": "maybe", "sms_enabled": [], "colour": "blue"},
        headers=as_user("bo"),
    )

    assert response.status_code == 422
    fields = {error["field"] for error in response.json()["errors"]}
    assert fields == {"body.marketing", "body.sms_enabled", "body.colour"}


async def test_a_database_out_of_reach_is_a_503_to_retry(settings: Settings) -> None:
    """Nothing listens where the database should be: a request that needs it is told to
    retry (503, Retry-After), not that the service is broken (500)."""
    unreachable = settings.model_copy(
        update={"database_url": "postgresql+asyncpg://postgres@127.0.0.1:9/nothing"}
    )
    app = create_app(unreachable)

    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/api/user/profile", headers=as_user("u-503"))

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "1"
    assert response.json()["code"] == "service_unavailable"


async def test_a_database_shutting_down_mid_request_is_a_503(settings: Settings) -> None:
    """What a PostgreSQL restart does to a query under way (57P01, wrapped by SQLAlchemy)."""
    app = create_app(settings)

    @app.get("/shutdown")
    async def shutdown() -> None:
        cause = asyncpg.AdminShutdownError("terminating connection due to administrator command")
        raise OperationalError("SELECT 1", None, cause) from cause

    @app.get("/bug")
    async def bug() -> None:
        raise OperationalError("SELECT 1", None, ValueError("not a connection problem"))

    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            shut = await client.get("/shutdown")
            broken = await client.get("/bug")

    assert (shut.status_code, shut.json()["code"]) == (503, "service_unavailable")
    assert (broken.status_code, broken.json()["code"]) == (500, "internal_error")
