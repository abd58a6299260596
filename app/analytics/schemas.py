from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from app.messages.categories import Category

RATE_NOTE = "`null` when no message finished (delivered, undelivered or failed)."


class Period(BaseModel):
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    from_: datetime = Field(alias="from", description="Start of the period (included).")
    to: datetime = Field(description="End of the period (excluded).")
    time_zone: str = Field(description="The zone the daily series is in.")
    category: Category | None = Field(description="The category asked for; `null`: all.")


class StatusCounts(BaseModel):
    """Messages by status; every status is present, zeros included."""

    scheduled: int
    queued: int
    sending: int
    sent: int
    delivered: int
    undelivered: int
    failed: int
    cancelled: int
    suppressed: int


class ErrorCount(BaseModel):
    code: int | None = Field(
        description="Twilio's error code; `null` for messages that failed without one."
    )
    meaning: str | None = Field(description="What the code means, when the service knows it.")
    count: int


class CurrencyAmount(BaseModel):
    currency: str
    reported: Decimal = Field(description="Twilio's prices in this currency, charges positive.")


class Cost(BaseModel):
    currency: str = Field(description="The account's currency (`SMS_PRICE_CURRENCY`).")
    reported: Decimal = Field(
        description="What Twilio reported for the messages it priced, in `currency` (charges "
        "positive)."
    )
    estimated: Decimal = Field(
        description="`estimated_segments` times `SMS_ESTIMATED_PRICE_PER_SEGMENT`, for messages "
        "Twilio has not priced (yet)."
    )
    estimated_segments: int = Field(
        description="Segments of the messages handed to Twilio (sending, sent, delivered, "
        "undelivered) without a price. Failed messages are not billed, and scheduled, queued, "
        "cancelled and suppressed ones never reached Twilio."
    )
    total: Decimal = Field(description="`reported` + `estimated`, in `currency`.")
    other_currencies: list[CurrencyAmount] = Field(
        description="Prices Twilio reported in another currency: never added to `total`."
    )


class Figures(BaseModel):
    counts: StatusCounts
    total: int = Field(description="All messages counted.")
    delivery_rate: float | None = Field(
        description=f"delivered / (delivered + undelivered + failed). {RATE_NOTE}"
    )
    error_rate: float | None = Field(
        description=f"(undelivered + failed) / (delivered + undelivered + failed). {RATE_NOTE}"
    )
    errors: list[ErrorCount] = Field(
        description="Undelivered and failed messages by Twilio error code, most frequent "
        "first; the counts add up to undelivered + failed."
    )
    segments: int = Field(description="Segments of all messages counted.")
    cost: Cost


class CategoryFigures(Figures):
    category: Category


class Day(BaseModel):
    date: date
    counts: StatusCounts
    total: int
    segments: int
    cost: Decimal = Field(
        description="Reported + estimated cost in `cost.currency`; other currencies left out."
    )


class _PeriodFirst(BaseModel):
    period: Period


# Bases' fields come first, the last base's first of all: the period, the figures, then these.
class Analytics(Figures, _PeriodFirst):
    """Messages created in the period: those still stored plus the daily aggregates retention
    kept of deleted ones (see `daily`)."""

    by_category: list[CategoryFigures] = Field(
        description="The same figures per category: every category, or the one asked for."
    )
    daily: list[Day] = Field(
        description="Per local day in `time_zone`, every day of the period, zeros included. "
        "Messages deleted by retention survive only as counts per UTC day: such a day counts "
        "when its UTC midnight is in the period and is shown under its UTC date."
    )
