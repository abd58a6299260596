"""The carrier at work: each accepted message's timeline (sent, then its outcome) as a task,
with a status callback for every change."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.twilio_sandbox import carrier
from app.twilio_sandbox.callbacks import CallbackSender, status_params
from app.twilio_sandbox.carrier import Status
from app.twilio_sandbox.faults import FaultDice, Faults
from app.twilio_sandbox.store import SandboxMessage


@dataclass(frozen=True, slots=True)
class DeliveryPlan:
    """The callback faults in force when the message was created; they stay with it."""

    step_seconds: float
    out_of_order: bool = False
    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    hold_rate: float = 0.0

    @classmethod
    def from_faults(cls, faults: Faults, default_step_seconds: float) -> DeliveryPlan:
        step = default_step_seconds
        if faults.callback_delay_ms is not None:
            step = faults.callback_delay_ms / 1000
        return cls(
            step_seconds=step,
            out_of_order=faults.out_of_order_callbacks,
            drop_rate=faults.drop_callbacks,
            duplicate_rate=faults.duplicate_callbacks,
            hold_rate=faults.hold_callbacks,
        )


class Delivery:
    def __init__(self, *, price_per_segment: str, dice: FaultDice, sender: CallbackSender) -> None:
        self._price_per_segment = price_per_segment
        self._dice = dice
        self._sender = sender
        self._plans: dict[str, DeliveryPlan] = {}
        self._timelines: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Callbacks held back by the hold_callbacks fault: (url, params), in order.
        self._held: list[tuple[str, dict[str, str]]] = []

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def start(self, message: SandboxMessage, plan: DeliveryPlan) -> None:
        self._plans[message.sid] = plan
        task = self._spawn(self._timeline(message, plan))
        self._timelines[message.sid] = task
        task.add_done_callback(lambda _: self._timelines.pop(message.sid, None))

    def stop(self, sid: str) -> None:
        """Ends a timeline early (a canceled scheduled message)."""
        task = self._timelines.pop(sid, None)
        if task is not None:
            task.cancel()

    def announce(self, message: SandboxMessage) -> None:
        """The callback for a status set outside the timeline, without holding up the caller."""
        plan = self._plans.get(message.sid, DeliveryPlan(step_seconds=0))
        params = status_params(message, datetime.now(UTC))
        self._spawn(self._post(message, params, plan))

    async def reset(self) -> None:
        """Cancels every timeline and callback in flight (reset, shutdown)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._plans.clear()
        self._timelines.clear()
        self._held.clear()

    async def release_held(self) -> int:
        """Sends the held callbacks, newest first (late and out of order); how many."""
        held, self._held = self._held, []
        for url, params in reversed(held):
            await self._sender.send(url, params)
        return len(held)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _timeline(self, message: SandboxMessage, plan: DeliveryPlan) -> None:
        if message.send_at is not None:
            wait = (message.send_at - datetime.now(UTC)).total_seconds()
            await asyncio.sleep(max(wait, 0.0))
        await asyncio.sleep(plan.step_seconds)
        now = datetime.now(UTC)
        if message.from_ is None:  # a Messaging Service picks a sender from its pool
            message.from_ = carrier.VALID_SENDER
        message.status, message.date_sent, message.date_updated = Status.SENT, now, now
        sent = status_params(message, now)
        result = carrier.outcome(message.to)
        held = plan.out_of_order and result.status is not None
        if not held:
            await self._post(message, sent, plan)
        if result.status is None:
            return
        await asyncio.sleep(plan.step_seconds)
        now = datetime.now(UTC)
        message.status, message.date_updated = result.status, now
        message.error_code, message.error_message = result.error_code, result.error_message
        message.price = carrier.price(self._price_per_segment, message.num_segments)
        await self._post(message, status_params(message, now), plan)
        if held:
            await self._post(message, sent, plan)

    async def _post(
        self, message: SandboxMessage, params: dict[str, str], plan: DeliveryPlan
    ) -> None:
        if message.status_callback is None or self._dice.roll(plan.drop_rate):
            return
        if self._dice.roll(plan.hold_rate):
            self._held.append((message.status_callback, params))
            return
        copies = 2 if self._dice.roll(plan.duplicate_rate) else 1
        for _ in range(copies):
            await self._sender.send(message.status_callback, params)
