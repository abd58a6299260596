"""The sandbox's one runtime object, and the dependency routes reach it by."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from app.twilio_sandbox.callbacks import CallbackSender
from app.twilio_sandbox.config import SandboxConfig
from app.twilio_sandbox.delivery import Delivery, DeliveryPlan
from app.twilio_sandbox.faults import FaultDice
from app.twilio_sandbox.service import MessagesService
from app.twilio_sandbox.store import MessageStore


class Sandbox:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.store = MessageStore()
        self.dice = FaultDice()
        self.callbacks = CallbackSender(config.auth_token, config.callback_timeout_seconds)
        self.delivery = Delivery(
            price_per_segment=config.price_per_segment, dice=self.dice, sender=self.callbacks
        )
        self.messages = MessagesService(config.account_sid, self.store, self.delivery)

    def plan(self) -> DeliveryPlan:
        return DeliveryPlan.from_faults(self.dice.faults, self.config.callback_delay_seconds)

    async def reset(self) -> None:
        await self.delivery.reset()
        self.store.clear()
        self.dice.reset()

    async def aclose(self) -> None:
        await self.delivery.reset()
        await self.callbacks.aclose()


def sandbox_of(request: Request) -> Sandbox:
    # On app.state, not lifespan state: mounted inside another app the lifespan never runs.
    return cast(Sandbox, request.app.state.sandbox)


async def get_sandbox(request: Request) -> Sandbox:
    return sandbox_of(request)


SandboxDep = Annotated[Sandbox, Depends(get_sandbox)]
