"""PlainRoute (app/core/routes.py): the endpoint gets the Request and nothing is solved for it,
yet FastAPI documents the route, and an endpoint that asks for more is refused at start-up.
PlainRouteShortcuts: such routes answered past the router, errors as the app answers them."""

from __future__ import annotations

from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.deps import provided
from app.core.routes import PlainRoute, PlainRouteShortcuts


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


class Refused(Exception):
    pass


def shortcut_app() -> FastAPI:
    """An app whose plain routes are reached by PlainRouteShortcuts, with the handlers an
    app has: its own exception, HTTPException, anything else."""
    router = APIRouter(route_class=PlainRoute)

    @router.post("/items/{item_id}")
    async def touch(request: Request) -> Response:
        item = request.path_params["item_id"]
        if item == "refused":
            raise Refused
        if item == "missing":
            raise HTTPException(404, "no such item")
        if item == "broken":
            raise RuntimeError("bug")
        return Response(f"touched {item} via {request.scope['route'].path}", status_code=201)

    app = FastAPI()
    app.include_router(router)

    async def on_refused(_: Request, __: Exception) -> Response:
        return PlainTextResponse("refused", status_code=403)

    async def on_http_error(_: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        return PlainTextResponse(f"http {error.status_code}", status_code=error.status_code)

    async def on_unexpected(_: Request, __: Exception) -> Response:
        return PlainTextResponse("sorry", status_code=500)

    app.add_exception_handler(Refused, on_refused)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
    app.add_middleware(PlainRouteShortcuts, routes=router.routes, handlers=app.exception_handlers)
    return app


async def test_shortcuts_answer_past_the_router_as_the_route_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def not_routed(*_: object) -> None:
        raise AssertionError("the router handled a request the shortcut should have")

    monkeypatch.setattr(PlainRoute, "handle", not_routed)
    transport = httpx.ASGITransport(app=shortcut_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answers = {
            item: await client.post(f"/items/{item}")
            for item in ("lamp", "refused", "missing", "broken")
        }

    assert {item: (a.status_code, a.text) for item, a in answers.items()} == {
        "lamp": (201, "touched lamp via /items/{item_id}"),
        "refused": (403, "refused"),
        "missing": (404, "http 404"),
        "broken": (500, "sorry"),
    }


async def test_what_no_shortcut_matches_is_routed_as_usual() -> None:
    transport = httpx.ASGITransport(app=shortcut_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        wrong_method = await client.get("/items/lamp")
        unknown = await client.post("/elsewhere")

    assert (wrong_method.status_code, wrong_method.text) == (405, "http 405")
    assert (unknown.status_code, unknown.text) == (404, "http 404")
