"""The busiest endpoints, made cheap: FastAPI documents them from their declaration, but solves
nothing per request (PlainRoute), and their requests go straight to them past Starlette's
routing (PlainRouteShortcuts).

Why: for a status callback, FastAPI's dependency solving and handler around the endpoint were
~20% of the API's CPU, and the routing to it (the exception middleware, every router's match,
FastAPI's exit stacks) another ~20% (py-spy during a campaign, two callbacks per message)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, cast

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, ExceptionHandler, Receive, Scope, Send

Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class PlainRoute(APIRoute):
    """The endpoint takes the Request alone and answers a Response itself."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        parameters = list(inspect.signature(endpoint).parameters.values())
        if len(parameters) != 1 or parameters[0].annotation not in (Request, "Request"):
            raise TypeError(f"{endpoint.__name__} must take the Request alone")
        super().__init__(path, endpoint, **options)

    def get_route_handler(self) -> Endpoint:
        return cast(Endpoint, self.endpoint)


class PlainRouteShortcuts:
    """ASGI middleware, added before any other (so innermost: metrics and the body limit still
    see every request): a request for one of these plain routes goes to its endpoint at once,
    with the scope the router would have given it. Errors are answered by the app's own
    handlers, through the exception middleware Starlette would have used; the unexpected ones
    reach ServerErrorMiddleware as from any route."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Iterable[BaseRoute],
        handlers: Mapping[Any, ExceptionHandler],
    ) -> None:
        self.app = app
        # As Starlette's build_middleware_stack splits them: 500 is ServerErrorMiddleware's.
        caught = {key: value for key, value in handlers.items() if key not in (500, Exception)}
        self._shortcuts = [
            (route, ExceptionMiddleware(_answer_with(route.get_route_handler()), caught))
            for route in routes
            if isinstance(route, PlainRoute)
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route, endpoint_app in self._shortcuts:
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope["route"] = route  # as the router sets it (metrics' route label)
                    scope.update(child_scope)
                    await endpoint_app(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _answer_with(endpoint: Endpoint) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await endpoint(Request(scope, receive, send))
        await response(scope, receive, send)

    return app
