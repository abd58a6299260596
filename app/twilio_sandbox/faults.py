"""Fault knobs (what can go wrong, how often) and the one random source they are rolled with."""

from __future__ import annotations

import random
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from app.twilio_sandbox.errors import TwilioApiError

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class Faults(BaseModel):
    """Read when a message is created; `latency_ms` applies to every API request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: int = Field(default=0, ge=0, le=600_000, description="Added to every request.")
    slow_rate: Probability = Field(default=0.0, description="A request answered `slow_ms` later.")
    slow_ms: int = Field(default=0, ge=0, le=600_000, description="How late a slow answer is.")
    rate_429: Probability = Field(default=0.0, description="429/20429; nothing is stored.")
    rate_5xx: Probability = Field(default=0.0, description="500 or 503; nothing is stored.")
    rate_5xx_after_accept: Probability = Field(
        default=0.0, description="Stored and delivered, then answered 500: the ambiguous case."
    )
    timeout_rate: Probability = Field(
        default=0.0, description="Stored and delivered, the answer held back `hang_seconds`."
    )
    callback_delay_ms: int | None = Field(
        default=None, ge=0, le=3_600_000, description="Overrides the configured status delay."
    )
    drop_callbacks: Probability = Field(default=0.0, description="A callback is never sent.")
    duplicate_callbacks: Probability = Field(default=0.0, description="A callback is sent twice.")
    hold_callbacks: Probability = Field(
        default=0.0,
        description="A callback is held back until POST /sandbox/callbacks/release: it comes "
        "late, after the status it reports was learned otherwise (the poller), and out of order.",
    )
    out_of_order_callbacks: bool = Field(
        default=False, description="The final status callback comes before `sent`."
    )


class FaultsUpdate(Faults):
    """PUT replaces every knob (omitted ones go back to their defaults)."""

    seed: int | None = Field(default=None, description="Reseeds the random source.")


class FaultDice:
    """The knobs in force, rolled with a random source tests can seed."""

    def __init__(self) -> None:
        self.faults = Faults()
        # Simulation, not security: a seedable PRNG is the point.
        self._random = random.Random()  # noqa: S311

    def set(self, update: FaultsUpdate) -> Faults:
        if update.seed is not None:
            self._random.seed(update.seed)
        self.faults = Faults.model_validate(update.model_dump(exclude={"seed"}))
        return self.faults

    def reset(self) -> None:
        self.faults = Faults()
        self._random = random.Random()  # noqa: S311

    def roll(self, probability: float) -> bool:
        return probability > 0 and self._random.random() < probability

    def before_accept(self) -> TwilioApiError | None:
        """A refusal that comes before Twilio looks at the request."""
        if self.roll(self.faults.rate_429):
            return TwilioApiError(429, 20429)
        if self.roll(self.faults.rate_5xx):
            status = self._random.choice((500, 503))
            return TwilioApiError(status, 20500 if status == 500 else 20503)
        return None

    def after_accept(self) -> TwilioApiError | None:
        """A failure of the answer once the message is stored: the client cannot tell."""
        if self.roll(self.faults.rate_5xx_after_accept):
            return TwilioApiError(500, 20500)
        return None

    def slowness(self) -> float:
        """Seconds this request's answer is held back (beyond `latency_ms`)."""
        return self.faults.slow_ms / 1000 if self.roll(self.faults.slow_rate) else 0.0

    def hangs(self) -> bool:
        return self.roll(self.faults.timeout_rate)
