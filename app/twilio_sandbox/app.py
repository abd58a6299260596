"""The sandbox application: `create_sandbox_app()` to mount or serve."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.routes import PlainRouteShortcuts
from app.twilio_sandbox import control, router
from app.twilio_sandbox.config import SandboxConfig
from app.twilio_sandbox.errors import TwilioApiError, not_found
from app.twilio_sandbox.state import Sandbox

DESCRIPTION = """\
A Twilio-compatible Messages API that simulates a carrier, for development and tests.
Magic numbers as Twilio's test credentials, plus To +15005550020 (undelivered, 30003),
+15005550021 (failed, 30008) and +15005550022 (stays sent). Fault knobs at /sandbox/faults.
"""


def create_sandbox_app(config: SandboxConfig | None = None) -> FastAPI:
    """The lifespan owns the callback client and cancels what is in flight on shutdown. Mounted
    in another app (whose lifespan does not run ours), enter `app.router.lifespan_context(app)`
    from the parent's lifespan to get the same clean shutdown."""
    sandbox = Sandbox(config or SandboxConfig())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sandbox.callbacks.open()
        try:
            yield
        finally:
            await sandbox.aclose()

    app = FastAPI(
        title="Twilio sandbox", version="0.1.0", description=DESCRIPTION, lifespan=lifespan
    )
    app.state.sandbox = sandbox
    app.add_exception_handler(TwilioApiError, _twilio_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.include_router(router.router)
    app.include_router(control.router)
    # Every create of a campaign comes here (app/core/routes.py).
    app.add_middleware(
        PlainRouteShortcuts, routes=router.router.routes, handlers=app.exception_handlers
    )
    return app


async def _twilio_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, TwilioApiError)
    return JSONResponse(error.body.model_dump(), status_code=error.status, headers=error.headers)


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    """Unknown paths and methods answer in Twilio's shape too."""
    assert isinstance(error, StarletteHTTPException)
    if error.status_code == 404:
        twilio = not_found(request.url.path)
    elif error.status_code == 405:
        twilio = TwilioApiError(405, 20004)
    else:
        twilio = TwilioApiError(error.status_code, 20500 if error.status_code >= 500 else 20001)
    return await _twilio_error(request, twilio)
