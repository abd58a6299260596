from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Response, status

from app.auth.dependencies import scope_checker
from app.auth.principal import Principal, Scope
from app.campaigns import service
from app.campaigns.queue import enqueue_chunks
from app.campaigns.schemas import BulkSendRequest, Campaign
from app.core.deps import PhoneCipherDep, RedisDep, SessionDep, SessionmakerDep, SettingsDep
from app.core.errors import problem_responses
from app.idempotency.dependencies import IdempotencyDep

router = APIRouter(
    prefix="/api", tags=["campaigns"], responses=problem_responses(400, 401, 403, 422)
)

BulkSender = Annotated[Principal, Depends(scope_checker(Scope.SMS_BULK))]


def _enqueue_after_response(
    background: BackgroundTasks, redis: RedisDep, launch: service.Launch
) -> None:
    # Background tasks run after the response, so after the commit: a chunk job never looks
    # for rows that are not there yet (and the campaign sweep queues them if this fails).
    if launch.to_enqueue and launch.campaign.id is not None:
        background.add_task(enqueue_chunks, redis, launch.campaign.id, launch.to_enqueue)


@router.post(
    "/sms/bulk-send",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Campaign,
    summary="Send one text to up to 100,000 recipients (a marketing campaign)",
    description="Checks every recipient as a marketing message (a user's number, its "
    "verification and `marketing` preference; STOP; the country; duplicates, sent once) and "
    "answers with the campaign and its estimate: recipients, who is left out and why, "
    "segments, cost. Messages that would arrive in their recipient's quiet hours are "
    "`scheduled` for the morning. `dry_run` answers 200 with the estimate alone and stores "
    "nothing. Retries with the same `Idempotency-Key` get the first answer.",
    responses={
        200: {"model": Campaign, "description": "A dry run: the estimate, nothing stored."},
        **problem_responses(409, 413),
    },
)
async def bulk_send(
    body: BulkSendRequest,
    principal: BulkSender,
    idempotency: IdempotencyDep,
    session: SessionDep,
    cipher: PhoneCipherDep,
    settings: SettingsDep,
    redis: RedisDep,
    background: BackgroundTasks,
    response: Response,
) -> Campaign | Response:
    if (replay := await idempotency.begin("bulk-send", body)) is not None:
        return replay
    launch = await service.create(session, cipher, settings, principal, body)
    code = status.HTTP_200_OK if body.dry_run else status.HTTP_202_ACCEPTED
    await idempotency.complete(session, code, launch.campaign)
    _enqueue_after_response(background, redis, launch)
    response.status_code = code
    return launch.campaign


@router.get(
    "/sms/bulk/{campaign_id}",
    response_model=Campaign,
    summary="A campaign's status and live progress counts",
    description="Its status (`scheduled`, `running`, `paused`, `cancelled`, `completed`), "
    "the estimate it was accepted with, and its messages counted by status now. Visible to "
    "whom sent it, and to `sms:read`.",
    responses=problem_responses(404),
)
async def get_campaign(
    campaign_id: uuid.UUID, principal: BulkSender, session: SessionDep
) -> Campaign:
    return await service.get_campaign(session, principal, campaign_id)


@router.post(
    "/sms/bulk/{campaign_id}/pause",
    response_model=Campaign,
    summary="Pause a campaign",
    description="From this answer on no message of the campaign is handed to Twilio (those "
    "already handed go on); its chunk jobs stop within a second. Pausing again changes "
    "nothing; a cancelled or completed campaign is `409 campaign_finished`.",
    responses=problem_responses(404, 409),
)
async def pause_campaign(
    campaign_id: uuid.UUID, principal: BulkSender, session: SessionDep
) -> Campaign:
    return await service.pause(session, principal, campaign_id)


@router.post(
    "/sms/bulk/{campaign_id}/resume",
    response_model=Campaign,
    summary="Resume a paused campaign",
    description="Sending goes on with the messages not sent yet, none twice. Resuming a "
    "running campaign changes nothing; a cancelled or completed one is `409 campaign_finished`.",
    responses=problem_responses(404, 409),
)
async def resume_campaign(
    campaign_id: uuid.UUID,
    principal: BulkSender,
    session: SessionDep,
    settings: SettingsDep,
    redis: RedisDep,
    background: BackgroundTasks,
) -> Campaign:
    launch = await service.resume(session, settings, principal, campaign_id)
    _enqueue_after_response(background, redis, launch)
    return launch.campaign


@router.post(
    "/sms/bulk/{campaign_id}/cancel",
    response_model=Campaign,
    summary="Cancel a campaign",
    description="Its messages not yet handed to Twilio are cancelled; those already handed "
    "go on and are counted. Cancelling again changes nothing; a completed campaign is "
    "`409 campaign_finished`.",
    responses=problem_responses(404, 409),
)
async def cancel_campaign(
    campaign_id: uuid.UUID, principal: BulkSender, sessionmaker: SessionmakerDep
) -> Campaign:
    return await service.cancel(sessionmaker, principal, campaign_id)
