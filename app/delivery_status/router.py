from __future__ import annotations

from typing import Annotated, cast

from fastapi import APIRouter, BackgroundTasks, Depends, Request, Response, status

from app.core.deps import SessionmakerDep
from app.core.errors import problem_responses
from app.delivery_status.batching import StatusBatcher, StatusBatchers
from app.delivery_status.service import StatusReport
from app.twilio.requests import TwilioForm, form_body

router = APIRouter(prefix="/api", tags=["twilio"])


async def get_status_batcher(request: Request, sessionmaker: SessionmakerDep) -> StatusBatcher:
    return cast(StatusBatchers, request.state.status_batchers).of(sessionmaker)


StatusBatcherDep = Annotated[StatusBatcher, Depends(get_status_batcher)]


@router.post(
    "/sms/webhook",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Twilio status callback",
    description="Signed by Twilio (`X-Twilio-Signature`). Status only moves forward; "
    "duplicates and late callbacks change nothing; unknown SIDs are acknowledged and ignored.",
    responses=problem_responses(403, 413),
    openapi_extra=form_body(
        "What Twilio posts; every parameter counts in the signature.",
        {
            "MessageSid": "The message",
            "MessageStatus": "queued, sent, delivered, undelivered, failed, …",
            "ErrorCode": "On failed and undelivered",
        },
    ),
)
async def status_callback(
    form: TwilioForm,
    batcher: StatusBatcherDep,
    background: BackgroundTasks,
) -> Response:
    sid = form.get("MessageSid") or form.get("SmsSid")
    reported = form.get("MessageStatus") or form.get("SmsStatus")
    code = form.get("ErrorCode")
    if isinstance(sid, str) and isinstance(reported, str):
        error_code = int(code) if isinstance(code, str) and code.isdigit() else None
        report = StatusReport(sid, reported, error_code)
        if await batcher.apply(report):
            # Maybe earlier than the worker's record of the SID: tried again after the answer
            # (Twilio does not wait, and does not resend).
            background.add_task(batcher.apply_when_known, report)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
