from __future__ import annotations

from typing import cast

from fastapi import APIRouter, Request, Response, status

from app.core.deps import get_sessionmaker, get_settings, provided
from app.core.errors import problem_responses
from app.core.routes import PlainRoute
from app.delivery_status.batching import StatusBatchers
from app.delivery_status.service import StatusReport
from app.twilio.requests import form_body, signed_form

# Two callbacks per message: a plain route (app/core/routes.py says why).
router = APIRouter(prefix="/api", tags=["twilio"], route_class=PlainRoute)


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
async def status_callback(request: Request) -> Response:
    form = await signed_form(request, await provided(request, get_settings))
    sid = form.get("MessageSid") or form.get("SmsSid")
    reported = form.get("MessageStatus") or form.get("SmsStatus")
    code = form.get("ErrorCode")
    if isinstance(sid, str) and isinstance(reported, str):
        error_code = int(code) if isinstance(code, str) and code.isdigit() else None
        report = StatusReport(sid, reported, error_code)
        batchers = cast(StatusBatchers, request.state.status_batchers)
        batcher = batchers.of(await provided(request, get_sessionmaker))
        # Maybe earlier than the worker's record of the SID: then tried again in the
        # background (Twilio does not wait, and does not resend).
        await batcher.apply(report)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
