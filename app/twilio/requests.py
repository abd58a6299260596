"""Requests from Twilio (callbacks, inbound messages): authenticated by X-Twilio-Signature only,
computed on PUBLIC_BASE_URL + path, never on what the app sees behind its proxy."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import FormData

from app.core.deps import SettingsDep
from app.core.errors import Forbidden
from app.twilio.signature import validate_signature


class InvalidSignature(Forbidden):
    code = "invalid_signature"


async def signed_form(request: Request, settings: SettingsDep) -> FormData:
    form = await request.form()
    token = settings.twilio.auth_token
    # PUBLIC_BASE_URL already carries any prefix the app is served under (root_path).
    path = request.url.path.removeprefix(request.scope.get("root_path", ""))
    url = settings.public_base + path
    if request.url.query:
        url += "?" + request.url.query
    signature = request.headers.get("X-Twilio-Signature", "")
    params = [(name, value) for name, value in form.multi_items() if isinstance(value, str)]
    if not token or not signature or not validate_signature(token, url, params, signature):
        raise InvalidSignature("X-Twilio-Signature does not match this request")
    return form


TwilioForm = Annotated[FormData, Depends(signed_form)]


# OpenAPI for form posts read through `signed_form` (FastAPI cannot see them).
def form_body(description: str, fields: dict[str, str]) -> dict[str, object]:
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            name: {"type": "string", "description": text}
                            for name, text in fields.items()
                        },
                        "additionalProperties": {"type": "string"},
                    }
                }
            },
        }
    }
