"""Liveness, readiness (the database and Redis, checked for real) and Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text

from app.core.deps import RedisDep, SessionmakerDep
from app.core.errors import problem_responses

router = APIRouter(tags=["operations"])

_CHECK_TIMEOUT_SECONDS = 2.0


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    database: Literal["ok", "unavailable"]
    redis: Literal["ok", "unavailable"]


@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="The database and Redis answer",
    responses={503: {"description": "A dependency is down", "model": Readiness}},
)
async def readyz(sessionmaker: SessionmakerDep, redis: RedisDep, response: Response) -> Readiness:
    async def database_ok() -> bool:
        async with sessionmaker() as session:
            await session.execute(text("SELECT 1"))
        return True

    async def redis_ok() -> bool:
        return bool(await redis.ping())

    database, cache = await asyncio.gather(
        _within_timeout(database_ok()), _within_timeout(redis_ok())
    )
    ready = database and cache
    if not ready:
        response.status_code = 503
    return Readiness(
        status="ok" if ready else "unavailable",
        database="ok" if database else "unavailable",
        redis="ok" if cache else "unavailable",
    )


async def _within_timeout(check: Coroutine[Any, Any, bool]) -> bool:
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT_SECONDS):
            return await check
    except Exception:
        return False


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **problem_responses()},
)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
