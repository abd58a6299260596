"""Twilio's Messages API over HTTP: Basic auth, form bodies, Twilio-shaped answers."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Path, Request, Response

from app.core.routes import PlainRoute
from app.twilio_sandbox.errors import TwilioErrorBody, bad_request, unauthenticated
from app.twilio_sandbox.schemas import MessageList, MessageResource
from app.twilio_sandbox.state import SandboxDep, sandbox_of

AccountSid = Annotated[str, Path(alias="AccountSid")]
MessageSid = Annotated[str, Path(alias="Sid")]


async def simulate_latency(sandbox: SandboxDep) -> None:
    delay = sandbox.dice.faults.latency_ms / 1000 + sandbox.dice.slowness()
    if delay:
        await asyncio.sleep(delay)


async def authenticate(request: Request, sandbox: SandboxDep, account_sid: AccountSid) -> None:
    """HTTP Basic: the account SID in the path and its auth token."""
    username, password = _basic_credentials(request.headers.get("Authorization", ""))
    expected_user = sandbox.config.account_sid.encode()
    expected_password = sandbox.config.auth_token.encode()
    matches = hmac.compare_digest(username, expected_user) & hmac.compare_digest(
        password, expected_password
    )
    if not matches or account_sid != sandbox.config.account_sid:
        raise unauthenticated()


def _basic_credentials(header: str) -> tuple[bytes, bytes]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return b"", b""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return b"", b""
    username, _, password = decoded.partition(b":")
    return username, password


async def read_form(request: Request) -> dict[str, str]:
    """The form body; empty values are kept (`Body=` redacts)."""
    try:
        text = (await request.body()).decode()
    except UnicodeDecodeError:
        raise bad_request(20001, "The request body is not UTF-8.") from None
    return dict(parse_qsl(text, keep_blank_values=True))


_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": TwilioErrorBody} for status in (400, 401, 404, 429, 500, 503)
}

router = APIRouter(
    prefix="/2010-04-01/Accounts/{AccountSid}",
    tags=["Twilio Messages API"],
    responses=_ERRORS,
)
# Every route but create, which runs the same two checks itself.
_CHECKS = [Depends(simulate_latency), Depends(authenticate)]


# A campaign's every message comes here: a plain route (app/core/routes.py), no response model
# validated per request; FastAPI's machinery was a third of the sandbox's CPU per create (py-spy).
async def create_message(request: Request) -> Response:
    sandbox = sandbox_of(request)
    await simulate_latency(sandbox)
    await authenticate(request, sandbox, request.path_params["AccountSid"])
    refusal = sandbox.dice.before_accept()
    if refusal is not None:
        raise refusal
    message = sandbox.messages.create(await read_form(request), sandbox.plan())
    failure = sandbox.dice.after_accept()
    if failure is not None:
        raise failure
    if sandbox.dice.hangs():
        await asyncio.sleep(sandbox.config.hang_seconds)
    resource = MessageResource.of(message).model_dump_json(by_alias=True)
    return Response(resource, status_code=201, media_type="application/json")


router.add_api_route(
    "/Messages.json",
    create_message,
    methods=["POST"],
    status_code=201,
    response_model=MessageResource,
    route_class_override=PlainRoute,
    summary="Create Message",
    description="As Twilio: HTTP Basic with the account's SID and token, a form body; the "
    "carrier then runs the message's course, with a status callback for each change.",
    # The path's parameter, which the endpoint reads itself.
    openapi_extra={
        "parameters": [
            {"name": "AccountSid", "in": "path", "required": True, "schema": {"type": "string"}}
        ]
    },
)


@router.get("/Messages.json", response_model=MessageList, dependencies=_CHECKS)
async def list_messages(request: Request, sandbox: SandboxDep) -> MessageList:
    # Raw pairs: the filters are named "DateSent>" and "DateSent<".
    return MessageList.of(sandbox.messages.list(request.query_params.multi_items()))


@router.get("/Messages/{Sid}.json", response_model=MessageResource, dependencies=_CHECKS)
async def fetch_message(sid: MessageSid, sandbox: SandboxDep) -> MessageResource:
    return MessageResource.of(sandbox.messages.fetch(sid))


@router.post("/Messages/{Sid}.json", response_model=MessageResource, dependencies=_CHECKS)
async def update_message(sid: MessageSid, request: Request, sandbox: SandboxDep) -> MessageResource:
    return MessageResource.of(sandbox.messages.update(sid, await read_form(request)))


@router.delete(
    "/Messages/{Sid}.json", status_code=204, response_class=Response, dependencies=_CHECKS
)
async def delete_message(sid: MessageSid, sandbox: SandboxDep) -> Response:
    sandbox.messages.delete(sid)
    return Response(status_code=204)
