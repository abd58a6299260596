"""The API application: `uvicorn app.main:app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from app.analytics.router import router as analytics_router
from app.bookings.router import router as bookings_router
from app.campaigns.router import router as campaigns_router
from app.codes.router import router as codes_router
from app.core.body_limit import BodyLimitMiddleware
from app.core.errors import Problem, install_error_handlers
from app.core.heap import freeze_startup_heap
from app.core.logging import configure_logging
from app.core.metrics import MetricsMiddleware
from app.core.routes import PlainRouteShortcuts
from app.core.settings import SANDBOX_MOUNT_PATH, Settings
from app.core.state import State, close_state, open_state
from app.delivery_status.router import router as delivery_status_router
from app.health.router import router as health_router
from app.messages.router import router as messages_router
from app.messages.service import templates_dir
from app.notifications.rendering import check_templates
from app.notifications.router import router as notifications_router
from app.optouts.router import router as optouts_router
from app.phone_validation.router import router as phone_validation_router
from app.preferences.router import router as preferences_router
from app.topics.router import router as topics_router
from app.twilio_sandbox.app import create_sandbox_app
from app.users.router import router as users_router

DESCRIPTION = """\
Everything about SMS for the platform: users' numbers and preferences, notifications,
reminders, one-time codes, campaigns, delivery tracking and opt-outs.

Authenticate with `Authorization: Bearer <token>`: a service API key (`smsk_…`, with scopes)
or the end user's JWT. Every error is `application/problem+json` with a stable `code`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level)
    # A broken template override stops the start, not a request later.
    check_templates(templates_dir(settings))

    # No Twilio account: the sandbox stands in for Twilio, mounted here (SPEC §7).
    sandbox = create_sandbox_app() if settings.twilio_sandboxed else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[State]:
        state = await open_state(settings)
        freeze_startup_heap()
        try:
            if sandbox is None:
                yield state
            else:  # a mounted app's lifespan does not run by itself
                async with sandbox.router.lifespan_context(sandbox):
                    yield state
        finally:
            await close_state(state)

    app = FastAPI(
        title="SMS Notification Service",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # Operation ids are the handlers' names: what generated clients call their methods.
        generate_unique_id_function=lambda route: route.name,
    )
    install_error_handlers(app)
    # First, so innermost: the body limit and metrics apply to the shortcuts too.
    app.add_middleware(
        PlainRouteShortcuts,
        routes=delivery_status_router.routes,
        handlers=app.exception_handlers,
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_body_bytes)
    app.add_middleware(MetricsMiddleware)

    # Each router carries its full prefix, so a route's own path is the template metrics use.
    # Starlette tries routes in this order: the busiest paths (sends, Twilio's callbacks) come
    # first, as matching the others first cost ~12% of a status callback's CPU.
    for router in (
        messages_router,
        delivery_status_router,
        users_router,
        preferences_router,
        topics_router,
        analytics_router,
        notifications_router,
        campaigns_router,
        bookings_router,
        codes_router,
        optouts_router,
        phone_validation_router,
        health_router,
    ):
        app.include_router(router)
    if sandbox is not None:
        app.mount(SANDBOX_MOUNT_PATH, sandbox)
    _register_problem_schema(app)
    return app


def _register_problem_schema(app: FastAPI) -> None:
    """Routes point at `#/components/schemas/Problem`; make sure the schema is there."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, definition in problem.pop("$defs", {}).items():
                schemas.setdefault(name, definition)
            schemas["Problem"] = problem
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


app = create_app()
