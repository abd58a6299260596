from __future__ import annotations

from xml.sax.saxutils import escape

from fastapi import APIRouter, Response

from app.core.crypto import PhoneCipher
from app.core.deps import PhoneCipherDep, SessionDep, SettingsDep
from app.core.errors import problem_responses
from app.optouts import service
from app.optouts.service import Keyword
from app.twilio.requests import TwilioForm, form_body

router = APIRouter(prefix="/api", tags=["twilio"])

TWIML = "text/xml"


def twiml(reply: str | None) -> Response:
    body = f"<Response><Message>{escape(reply)}</Message></Response>" if reply else "<Response/>"
    return Response('<?xml version="1.0" encoding="UTF-8"?>' + body, media_type=TWIML)


@router.post(
    "/sms/inbound",
    summary="Twilio inbound message",
    description="STOP (and its synonyms) stops every message to the number until START; HELP "
    "answers with the help text. Answers TwiML.",
    response_class=Response,
    responses={200: {"content": {TWIML: {}}}, **problem_responses(403, 413)},
    openapi_extra=form_body(
        "What Twilio posts for a message to one of our numbers (signed).",
        {"From": "Sender, E.164", "Body": "The text", "OptOutType": "With Advanced Opt-Out"},
    ),
)
async def inbound_message(
    form: TwilioForm, session: SessionDep, cipher: PhoneCipherDep, settings: SettingsDep
) -> Response:
    sender, body, sid = form.get("From"), form.get("Body"), form.get("MessageSid")
    opt_out_type = form.get("OptOutType")
    if not isinstance(sender, str) or not isinstance(body, str):
        return twiml(None)
    found = service.keyword_of(body, opt_out_type if isinstance(opt_out_type, str) else None)
    if found is None:
        return twiml(None)
    keyword, word = found
    index = _index(cipher, sender)
    message_sid = sid if isinstance(sid, str) else None
    # With Advanced Opt-Out, Twilio has already answered the keyword: do not answer twice.
    twilio_answered = bool(opt_out_type)
    if keyword is Keyword.OPT_OUT:
        first = await service.opt_out(
            session, index, source="inbound_sms", keyword=word, message_sid=message_sid
        )
        return twiml(settings.sms_opt_out_reply if first and not twilio_answered else None)
    if keyword is Keyword.OPT_IN:
        await service.opt_in(
            session, index, source="inbound_sms", keyword=word, message_sid=message_sid
        )
        return twiml(None if twilio_answered else settings.sms_opt_in_reply)
    await service.record_help(session, index, keyword=word, message_sid=message_sid)
    return twiml(None if twilio_answered else settings.sms_help_reply)


def _index(cipher: PhoneCipher, sender: str) -> bytes:
    return cipher.blind_index(sender.strip())
