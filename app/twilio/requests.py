"""Requests from Twilio (callbacks, inbound messages): authenticated by X-Twilio-Signature only,
computed on PUBLIC_BASE_URL + path, never on what the app sees behind its proxy."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import Depends, Request
from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from app.core.deps import SettingsDep
from app.core.errors import Forbidden
from app.twilio.signature import validate_signature

# Starlette's own limits on a urlencoded form, answered as it answers them.
MAX_FIELDS = 1000
MAX_FIELD_BYTES = 1024 * 1024


class InvalidSignature(Forbidden):
    code = "invalid_signature"


async def signed_form(request: Request, settings: SettingsDep) -> FormData:
    form = await read_form(request)
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


async def read_form(request: Request) -> FormData:
    """What Twilio posts (urlencoded) is parsed as Starlette parses it (the bytes as Latin-1,
    escapes as UTF-8, blank values kept, `&` alone separating) but by `parse_qsl` in one call:
    python-multipart's callback per field cost ~5% of the CPU of a status callback."""
    content_type, _ = parse_options_header(request.headers.get("Content-Type"))
    if content_type != b"application/x-www-form-urlencoded":
        return await request.form()
    body = await request.body()
    if len(body) > MAX_FIELD_BYTES and any(
        len(field) - (b"=" in field) > MAX_FIELD_BYTES for field in body.split(b"&")
    ):
        raise HTTPException(400, f"Field exceeded maximum size of {MAX_FIELD_BYTES // 1024}KB.")
    items: list[tuple[str, str | UploadFile]] = list(
        parse_qsl(body.decode("latin-1"), keep_blank_values=True)
    )
    if len(items) > MAX_FIELDS:
        raise HTTPException(400, f"Too many fields. Maximum number of fields is {MAX_FIELDS}.")
    return FormData(items)


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
