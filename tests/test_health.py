"""Liveness, readiness checked for real, and Prometheus metrics."""

from __future__ import annotations

import httpx
from arq.connections import ArqRedis
from fastapi import FastAPI
from redis.asyncio import ConnectionPool
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from app.core.deps import get_redis, get_sessionmaker
from tests.conftest import as_user


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_checks_the_database_and_redis(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok"}


async def test_readyz_is_503_when_the_database_is_down(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    dead = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    app.dependency_overrides[get_sessionmaker] = lambda: async_sessionmaker(dead)
    try:
        response = await client.get("/readyz")
    finally:
        await dead.dispose()

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "unavailable", "redis": "ok"}


async def test_readyz_is_503_when_redis_is_down(app: FastAPI, client: httpx.AsyncClient) -> None:
    dead = ArqRedis(connection_pool=ConnectionPool.from_url("redis://127.0.0.1:1/0"))
    app.dependency_overrides[get_redis] = lambda: dead
    try:
        response = await client.get("/readyz")
    finally:
        await dead.aclose()

    assert response.status_code == 503
    assert response.json()["redis"] == "unavailable"
    assert response.json()["database"] == "ok"


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/api/user/profile", headers=as_user("metrics-user"))

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    assert any(
        line.startswith("sms_http_requests_total{")
        and 'route="/api/user/profile"' in line
        and 'status="200"' in line
        for line in lines
    )
    assert "metrics-user" not in response.text
    assert "sms_http_request_duration_seconds_bucket" in response.text
