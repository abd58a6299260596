"""Domain errors and the one place that turns every error into RFC 9457 problem+json."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"


class FieldError(BaseModel):
    field: str = Field(description="Where the problem is, e.g. `body.phone_number`.")
    message: str
    type: str = Field(description="A stable machine-readable kind, e.g. `missing`.")


class Problem(BaseModel):
    """An error, as every endpoint answers one (RFC 9457)."""

    type: str = Field(examples=["urn:sms-service:problem:invalid_phone_number"])
    title: str
    status: int
    detail: str | None = None
    code: str = Field(description="Stable and machine-readable; branch on this, not on text.")
    errors: list[FieldError] | None = Field(
        default=None, description="The fields at fault, for validation errors."
    )


class ServiceError(Exception):
    """A failure a client can act on. Subclasses fix the status and code."""

    status: int = 500
    code: str = "internal_error"
    title: str = "Internal error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: Sequence[FieldError] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.errors = list(errors) if errors else None
        self.headers = dict(headers or {})


class BadRequest(ServiceError):
    status, code, title = 400, "bad_request", "Bad request"


class Unauthenticated(ServiceError):
    status, code, title = 401, "unauthenticated", "Authentication required"

    def __init__(self, detail: str | None = None, *, code: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})
        if code:
            self.code = code


class Forbidden(ServiceError):
    status, code, title = 403, "forbidden", "Forbidden"

    def __init__(self, detail: str | None = None, *, code: str | None = None) -> None:
        super().__init__(detail)
        if code:
            self.code = code


class NotFound(ServiceError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(ServiceError):
    status, code, title = 409, "conflict", "Conflict"


class Unprocessable(ServiceError):
    status, code, title = 422, "unprocessable", "Unprocessable request"


def problem_response(
    status: int,
    code: str,
    *,
    title: str | None = None,
    detail: str | None = None,
    errors: Sequence[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    problem = Problem(
        type=f"urn:sms-service:problem:{code}",
        title=title or HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        code=code,
        errors=list(errors) if errors else None,
    )
    return JSONResponse(
        problem.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers) if headers else None,
    )


def _field_path(location: Sequence[int | str]) -> str:
    return ".".join(str(part) for part in location)


def _validation_problem(request: Request, error: RequestValidationError) -> JSONResponse:
    issues = list(error.errors())
    if any(issue.get("type") == "json_invalid" for issue in issues):
        return problem_response(
            400, "malformed_json", title="Malformed JSON", detail="The body is not valid JSON."
        )
    fields = [
        FieldError(
            field=_field_path(issue.get("loc", ())),
            message=str(issue.get("msg", "invalid")),
            type=str(issue.get("type", "invalid")),
        )
        for issue in issues
    ]
    return problem_response(
        422,
        "validation_error",
        title="Invalid request",
        detail="; ".join(f"{item.field}: {item.message}" for item in fields),
        errors=fields,
    )


# A dependency out of reach rather than a fault of ours: the connection was refused, cut, or
# the server is shutting down or starting up. Worth a retry, so 503, not 500.
_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, no such socket
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    RedisConnectionError,
    RedisTimeoutError,
)


def is_unreachable(error: BaseException) -> bool:
    """Whether the error, or one it was raised from, is a database or Redis out of reach."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, _UNREACHABLE):
            return True
        if isinstance(current, DBAPIError):
            if current.connection_invalidated:
                return True
            pending.append(current.orig)
        pending += [current.__cause__, current.__context__]
    return False


def install_error_handlers(app: FastAPI) -> None:
    async def on_service_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ServiceError)
        return problem_response(
            error.status,
            error.code,
            title=error.title,
            detail=error.detail,
            errors=error.errors,
            headers=error.headers,
        )

    async def on_validation_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        return _validation_problem(request, error)

    async def on_http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        if error.status_code == 400:  # FastAPI could not parse the body (bad UTF-8, too deep)
            return problem_response(
                400, "malformed_json", title="Malformed JSON", detail="The body is not valid JSON."
            )
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        return problem_response(
            error.status_code,
            codes.get(error.status_code, f"http_{error.status_code}"),
            detail=str(error.detail) if error.detail else None,
            headers=getattr(error, "headers", None),
        )

    async def on_unexpected_error(request: Request, error: Exception) -> JSONResponse:
        if is_unreachable(error):
            logger.warning(
                "%s %s: a dependency is out of reach: %r", request.method, request.url.path, error
            )
            return problem_response(
                503,
                "service_unavailable",
                detail="The database or Redis is out of reach; retry shortly.",
                headers={"Retry-After": "1"},
            )
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "internal_error", detail="Something went wrong on our side.")

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected_error)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` documenting the problem+json errors a route can answer."""
    descriptions = {
        400: "Malformed request (for example a body that is not JSON).",
        401: "Missing, malformed, expired or revoked credentials.",
        403: "Authenticated, but not allowed to do this.",
        404: "No such resource, or not yours.",
        409: "Conflicts with the current state.",
        413: "The body is larger than the service accepts.",
        422: "The request is well-formed but invalid; `errors` lists the fields.",
        429: "Rate limited; retry after `Retry-After` seconds.",
        503: "A dependency is unavailable.",
    }
    return {
        status: {
            "description": descriptions.get(status, HTTPStatus(status).phrase),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }
