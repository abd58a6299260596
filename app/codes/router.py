from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from arq.connections import ArqRedis
from fastapi import APIRouter, BackgroundTasks, Depends, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.dependencies import CurrentPrincipal, CurrentUser
from app.auth.exceptions import MissingScope
from app.auth.principal import Principal, Scope
from app.codes import service
from app.codes.schemas import (
    CodeCheck,
    CodeRequest,
    CodeSent,
    CodeVerified,
    PhoneVerificationRequest,
)
from app.codes.service import CheckOutcome, Purpose
from app.core.deps import PhoneCipherDep, RateLimiterDep, RedisDep, SessionDep, SettingsDep
from app.core.errors import Unprocessable, problem_response, problem_responses
from app.idempotency.dependencies import IdempotencyDep
from app.idempotency.service import Idempotency
from app.outbox.queue import enqueue_send
from app.users import service as users
from app.users.models import User
from app.users.schemas import ProfileUpdate


async def _even_timing(settings: SettingsDep) -> AsyncIterator[None]:
    """Answers no sooner than OTP_RESPONSE_FLOOR_MS after the request began (commit included):
    a user who exists costs more work than one who does not, and the timing must not tell."""
    started = time.perf_counter()
    try:
        yield
    finally:
        remaining = settings.otp_response_floor_ms / 1000 - (time.perf_counter() - started)
        if remaining > 0:
            await asyncio.sleep(remaining)


router = APIRouter(
    prefix="/api",
    tags=["codes"],
    responses=problem_responses(400, 401, 403, 413, 422, 429),
    # Resolved before the session, so torn down after its commit.
    dependencies=[Depends(_even_timing, scope="function")],
)


async def _target(
    session: AsyncSession, principal: Principal, user_id: str | None
) -> tuple[str, User | None]:
    """The user id a code is for — the signed-in user, or the one a service (or admin)
    names — and that user. Unknown users are None, never an error: the answer must not tell."""
    if principal.kind == "user" and (user_id is None or user_id == principal.id):
        return principal.id, await users.find_user(session, principal.id)
    if not principal.can(Scope.SMS_SEND):
        raise MissingScope("codes for another user need the `sms:send` scope or an admin")
    if user_id is None:
        raise Unprocessable("give the `user_id` the code is for")
    return user_id, await users.find_user(session, user_id)


async def _answer(
    requested: service.CodeRequested,
    idempotency: Idempotency,
    session: AsyncSession,
    redis: ArqRedis,
    background: BackgroundTasks,
) -> CodeSent:
    """Keeps the answer for retries, and queues the code (at the front) after the commit."""
    await idempotency.complete(session, status.HTTP_202_ACCEPTED, requested.answer)
    if requested.message_id is not None:
        background.add_task(enqueue_send, redis, [requested.message_id], priority=True)
    return requested.answer


def _ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _invalid_code() -> Response:
    # Answered, not raised: the wrong try it counts must be committed with the answer.
    return problem_response(
        422,
        "invalid_code",
        title="Invalid code",
        detail="The code is wrong, expired or used up; request a new one.",
    )


@router.post(
    "/sms/send-2fa",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=CodeSent,
    summary="Send a two-factor code",
    description="To the user's verified number. The answer is the same whether or not the user "
    "or the number exists; codes go ahead of any queued traffic. 429 with `Retry-After` when a "
    "limit (per IP, user, number, number prefix, country) is reached.",
)
async def send_two_factor_code(
    request: Request,
    principal: CurrentPrincipal,
    idempotency: IdempotencyDep,
    session: SessionDep,
    cipher: PhoneCipherDep,
    settings: SettingsDep,
    limiter: RateLimiterDep,
    redis: RedisDep,
    background: BackgroundTasks,
    body: CodeRequest | None = None,
) -> CodeSent | Response:
    request_body = body or CodeRequest()
    if (replay := await idempotency.begin("send-2fa", request_body)) is not None:
        return replay
    subject, user = await _target(session, principal, request_body.user_id)
    requested = await service.request_code(
        session,
        limiter,
        cipher,
        settings,
        principal,
        subject=subject,
        user=user,
        purpose=Purpose.TWO_FACTOR,
        ip=_ip(request),
    )
    return await _answer(requested, idempotency, session, redis, background)


@router.post(
    "/sms/verify-2fa",
    response_model=CodeVerified,
    summary="Check a two-factor code",
    description="Right once; five wrong tries end the code; `422 invalid_code` otherwise.",
)
async def verify_two_factor_code(
    body: CodeCheck, principal: CurrentPrincipal, session: SessionDep, settings: SettingsDep
) -> CodeVerified | Response:
    _, user = await _target(session, principal, body.user_id)
    outcome = await service.check_code(
        session, settings, user=user, purpose=Purpose.TWO_FACTOR, code=body.code
    )
    return CodeVerified() if outcome is CheckOutcome.VERIFIED else _invalid_code()


@router.post(
    "/user/phone/verification",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=CodeSent,
    summary="Send a code to verify the signed-in user's number",
    description="With `phone_number`, the profile takes that number first (unverified).",
)
async def start_phone_verification(
    request: Request,
    user: CurrentUser,
    idempotency: IdempotencyDep,
    session: SessionDep,
    cipher: PhoneCipherDep,
    settings: SettingsDep,
    limiter: RateLimiterDep,
    redis: RedisDep,
    background: BackgroundTasks,
    body: PhoneVerificationRequest | None = None,
) -> CodeSent | Response:
    request_body = body or PhoneVerificationRequest()
    if (replay := await idempotency.begin("phone-verification", request_body)) is not None:
        return replay
    record, _ = await users.get_or_create_user(session, user.id, for_update=True)
    if request_body.phone_number is not None:
        update = ProfileUpdate(phone_number=request_body.phone_number, country=request_body.country)
        await users.update_profile(session, cipher, settings, record, update)
    requested = await service.request_code(
        session,
        limiter,
        cipher,
        settings,
        user,
        subject=user.id,
        user=record,
        purpose=Purpose.PHONE_VERIFICATION,
        ip=_ip(request),
    )
    return await _answer(requested, idempotency, session, redis, background)


@router.post(
    "/user/phone/verification/check",
    response_model=CodeVerified,
    summary="Check the code and mark the number verified",
)
async def check_phone_verification(
    body: CodeCheck, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> CodeVerified | Response:
    if body.user_id is not None and body.user_id != user.id:
        raise MissingScope("users check their own codes")
    record = await users.find_user(session, user.id)
    if record is not None:
        record, _ = await users.get_or_create_user(session, user.id, for_update=True)
    outcome = await service.check_code(
        session, settings, user=record, purpose=Purpose.PHONE_VERIFICATION, code=body.code
    )
    return CodeVerified() if outcome is CheckOutcome.VERIFIED else _invalid_code()
