from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Response, status

from app.auth.dependencies import scope_checker
from app.auth.principal import Principal, Scope
from app.core.deps import PhoneCipherDep, RedisDep, SessionDep, SettingsDep
from app.core.errors import problem_responses
from app.idempotency.dependencies import IdempotencyDep
from app.notifications import service
from app.notifications.schemas import NotifyRequest, NotifyResult
from app.outbox.queue import enqueue_pending

router = APIRouter(
    prefix="/api", tags=["notifications"], responses=problem_responses(400, 401, 403, 422)
)

Sender = Annotated[Principal, Depends(scope_checker(Scope.SMS_SEND))]


def enqueue_after_response(
    background: BackgroundTasks, redis: RedisDep, delivery: service.Delivery
) -> None:
    # Background tasks run after the response, so after the commit: the worker never looks
    # for a row that is not there yet (and the sweeper finds them if this fails).
    if delivery.to_enqueue:
        background.add_task(enqueue_pending, redis, delivery.to_enqueue)


@router.post(
    "/sms/notify",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=NotifyResult,
    summary="Send an event to users and/or a topic",
    description="Renders the event's template in each recipient's language and time zone and "
    "queues one message each. Recipients who must not get it are listed in `skipped` with "
    "the reason (their message is recorded as `suppressed`). Missing template data is a 422 "
    "naming the fields, and nothing is queued. Retries with the same `Idempotency-Key` get "
    "the first answer.",
    responses=problem_responses(409, 413),
)
async def notify(
    body: NotifyRequest,
    principal: Sender,
    idempotency: IdempotencyDep,
    session: SessionDep,
    cipher: PhoneCipherDep,
    settings: SettingsDep,
    redis: RedisDep,
    background: BackgroundTasks,
) -> NotifyResult | Response:
    if (replay := await idempotency.begin("notify", body)) is not None:
        return replay
    delivery = await service.notify(session, cipher, settings, principal, body)
    await idempotency.complete(session, status.HTTP_202_ACCEPTED, delivery.result)
    enqueue_after_response(background, redis, delivery)
    return delivery.result
