"""Refuses request bodies over MAX_REQUEST_BODY_BYTES before anything reads them whole.

FastAPI's own `max_body_size` answers from outside the app's exception handlers, so its 413
would not be problem+json; this one lets the app's handlers answer."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import problem_response


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            response = problem_response(
                413, "payload_too_large", title="Payload too large", detail=self._detail
            )
            await response(scope, receive, send)
            return

        received = 0

        async def counted_receive() -> Message:
            # A body without Content-Length (chunked) is counted as it streams in; the
            # exception reaches the app's handlers, which answer 413.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, detail=self._detail)
            return message

        await self.app(scope, counted_receive, send)

    @property
    def _detail(self) -> str:
        return f"request bodies are limited to {self.max_bytes} bytes"
