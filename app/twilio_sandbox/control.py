"""The sandbox's own endpoints under /sandbox (JSON, no auth): inboxes, messages, faults."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel

from app.twilio_sandbox.faults import Faults, FaultsUpdate
from app.twilio_sandbox.schemas import Inbox, InboxMessage, SandboxMessages, SandboxMessageView
from app.twilio_sandbox.state import SandboxDep

router = APIRouter(prefix="/sandbox", tags=["Sandbox control"])


@router.get("/inbox/{number}", response_model=Inbox)
async def get_inbox(number: str, sandbox: SandboxDep) -> Inbox:
    """What the number received, oldest first."""
    entries = sandbox.store.inbox(number)
    return Inbox(number=number, messages=[InboxMessage.of(entry) for entry in entries])


@router.get("/messages", response_model=SandboxMessages)
async def get_messages(sandbox: SandboxDep) -> SandboxMessages:
    """Every stored message, oldest first."""
    messages = sandbox.store.oldest_first()
    return SandboxMessages(messages=[SandboxMessageView.of(message) for message in messages])


@router.post("/reset", status_code=204, response_class=Response)
async def reset(sandbox: SandboxDep) -> Response:
    """Forgets messages, inboxes and faults; pending deliveries and callbacks are canceled."""
    await sandbox.reset()
    return Response(status_code=204)


class Released(BaseModel):
    released: int


@router.post("/callbacks/release", response_model=Released)
async def release_callbacks(sandbox: SandboxDep) -> Released:
    """Sends the callbacks the hold_callbacks fault held back, newest first."""
    return Released(released=await sandbox.delivery.release_held())


@router.get("/faults", response_model=Faults)
async def get_faults(sandbox: SandboxDep) -> Faults:
    return sandbox.dice.faults


@router.put("/faults", response_model=Faults)
async def put_faults(update: FaultsUpdate, sandbox: SandboxDep) -> Faults:
    """Replaces every knob; `seed` reseeds the random source they are rolled with."""
    return sandbox.dice.set(update)
