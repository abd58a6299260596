"""PlainRoute (app/core/routes.py): the endpoint gets the Request and nothing is solved for it,
yet FastAPI documents the route, and an endpoint that asks for more is refused at start-up."""

from __future__ import annotations

from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request, Response

from app.core.deps import provided
from app.core.routes import PlainRoute


async def greeting(request: Request) -> str:
    return "hello"


async def test_the_endpoint_gets_the_request_and_dependencies_come_overridden() -> None:
    router = APIRouter(route_class=PlainRoute)

    @router.post("/echo", status_code=201, summary="Echo")
    async def echo(request: Request) -> Response:
        said = await provided(request, greeting)
        return Response(f"{said} {(await request.body()).decode()}", status_code=201)

    app = FastAPI()
    app.include_router(router)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        plain = await client.post("/echo", content=b"world")
        app.dependency_overrides[greeting] = lambda: "bonjour"
        overridden = await client.post("/echo", content=b"monde")

    assert (plain.status_code, plain.text) == (201, "hello world")
    assert overridden.text == "bonjour monde"
    operation = app.openapi()["paths"]["/echo"]["post"]
    assert operation["summary"] == "Echo"
    assert "parameters" not in operation  # the Request is no parameter of the API


def test_an_endpoint_that_asks_for_more_than_the_request_is_refused() -> None:
    router = APIRouter(route_class=PlainRoute)

    async def needs_a_greeting(request: Request, said: Annotated[str, Depends(greeting)]) -> str:
        return said

    with pytest.raises(TypeError, match="must take the Request alone"):
        router.add_api_route("/greet", needs_a_greeting)
