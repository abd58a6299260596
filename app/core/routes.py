"""A route class for the busiest endpoints: FastAPI documents them from their declaration, but
solves nothing per request. The endpoint takes the Request and answers a Response itself.

Why: for a status callback, FastAPI's dependency solving and handler around the endpoint were
~20% of the API's CPU (py-spy during a campaign, two callbacks per message); the middleware,
routing and exception handlers still apply as to every route."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any, cast

from fastapi import Request, Response
from fastapi.routing import APIRoute


class PlainRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        parameters = list(inspect.signature(endpoint).parameters.values())
        if len(parameters) != 1 or parameters[0].annotation not in (Request, "Request"):
            raise TypeError(f"{endpoint.__name__} must take the Request alone")
        super().__init__(path, endpoint, **options)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return cast(Callable[[Request], Coroutine[Any, Any, Response]], self.endpoint)
