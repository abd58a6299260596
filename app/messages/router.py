from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Response, status

from app.auth.dependencies import CurrentPrincipal, scope_checker
from app.auth.principal import Principal, Scope
from app.core.deps import PhoneCipherDep, RedisDep, SessionDep, SettingsDep
from app.core.errors import problem_responses
from app.core.types import Moment, UserId
from app.idempotency.dependencies import IdempotentTransactionDep
from app.messages import service
from app.messages.categories import Category
from app.messages.repository import MessageFilter
from app.messages.schemas import (
    MessageAudit,
    MessageOut,
    MessagePage,
    Reference,
    SelfTestRequest,
    SendRequest,
)
from app.messages.status import Status
from app.outbox.queue import enqueue_pending
from app.users.service import find_user

router = APIRouter(
    prefix="/api", tags=["messages"], responses=problem_responses(400, 401, 403, 422)
)

Sender = Annotated[Principal, Depends(scope_checker(Scope.SMS_SEND))]


@router.post(
    "/sms/send",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=MessageOut,
    summary="Send one message",
    description="Answers 202 with the message as stored: `queued`, `scheduled` (with a future "
    "`send_at`), or `suppressed` with the reason it will never be sent. A message to a user "
    "honours their number, verification, preferences and STOP; a number given directly is "
    "used as given. Retries with the same `Idempotency-Key` get the first answer.",
    responses=problem_responses(404, 409, 413),
)
async def send_message(
    body: SendRequest,
    principal: Sender,
    work: IdempotentTransactionDep,
    cipher: PhoneCipherDep,
    settings: SettingsDep,
    redis: RedisDep,
    background: BackgroundTasks,
) -> MessageOut | Response:
    if (replay := await work.idempotency.begin("send", body)) is not None:
        return replay
    message = await service.send(work.session, cipher, settings, principal, body)
    await work.idempotency.complete(work.session, status.HTTP_202_ACCEPTED, message)
    _after_commit_enqueue(background, redis, message)
    return message


@router.post(
    "/sms/test",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=MessageOut,
    summary="Send a test message to your own number",
    description="To the signed-in user's verified number; admins may give another `to`.",
    responses=problem_responses(409, 413),
)
async def send_test_message(
    principal: CurrentPrincipal,
    work: IdempotentTransactionDep,
    cipher: PhoneCipherDep,
    settings: SettingsDep,
    redis: RedisDep,
    background: BackgroundTasks,
    body: SelfTestRequest | None = None,
) -> MessageOut | Response:
    request = body or SelfTestRequest()
    if (replay := await work.idempotency.begin("test", request)) is not None:
        return replay
    message = await service.send_test(work.session, cipher, settings, principal, request)
    await work.idempotency.complete(work.session, status.HTTP_202_ACCEPTED, message)
    _after_commit_enqueue(background, redis, message)
    return message


def _after_commit_enqueue(
    background: BackgroundTasks, redis: RedisDep, message: MessageOut
) -> None:
    # Background tasks run after the response, so after the commit: the worker never looks
    # for a row that is not there yet.
    if message.status in (Status.QUEUED, Status.SCHEDULED):
        background.add_task(enqueue_pending, redis, [(message.id, message.send_at)])


@router.get(
    "/sms/status/{message_id}",
    response_model=MessageOut,
    summary="A message's status and history",
    responses=problem_responses(404),
)
async def message_status(
    message_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep, cipher: PhoneCipherDep
) -> MessageOut:
    return await service.get_message(session, cipher, principal, message_id)


@router.get(
    "/sms/messages/{message_id}/events",
    response_model=MessageAudit,
    summary="A message's audit trail: who asked for it, every status change",
    description="Each change of status in order, with Twilio's status, the error code and its "
    "meaning, its source and detail; and who asked for the message (an API key, with its name, "
    "or a user). Visible to whom `GET /api/sms/status/{id}` is.",
    responses=problem_responses(404),
)
async def message_events(
    message_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep
) -> MessageAudit:
    return await service.audit(session, principal, message_id)


@router.get(
    "/sms/messages",
    response_model=MessagePage,
    summary="Messages, newest first",
    description="Users see the messages sent to them; services see what they sent, or "
    "everything with `sms:read`.",
)
async def list_messages(
    principal: CurrentPrincipal,
    session: SessionDep,
    cipher: PhoneCipherDep,
    status_: Annotated[Status | None, Query(alias="status")] = None,
    category: Category | None = None,
    user_id: UserId | None = None,
    reference: Reference | None = None,
    created_after: Annotated[Moment | None, Query()] = None,
    created_before: Annotated[Moment | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> MessagePage:
    owner = await find_user(session, user_id) if user_id is not None else None
    if user_id is not None and owner is None:
        return MessagePage(messages=[], next_cursor=None)
    where = MessageFilter(
        user_id=owner.id if owner else None,
        status=status_,
        category=category,
        reference=reference,
        created_after=created_after,
        created_before=created_before,
    )
    return await service.list_messages(
        session, cipher, principal, where, cursor=cursor, limit=limit
    )


@router.post(
    "/sms/messages/{message_id}/cancel",
    response_model=MessageOut,
    summary="Cancel a message not yet handed to Twilio",
    responses=problem_responses(404, 409),
)
async def cancel_message(
    message_id: uuid.UUID, principal: CurrentPrincipal, session: SessionDep, cipher: PhoneCipherDep
) -> MessageOut:
    return await service.cancel(session, cipher, principal, message_id)
