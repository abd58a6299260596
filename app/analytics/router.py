from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.analytics import service
from app.analytics.schemas import Analytics
from app.auth.dependencies import scope_checker
from app.auth.principal import Principal, Scope
from app.core.deps import SessionDep, SettingsDep
from app.core.errors import problem_responses
from app.core.types import Moment, TimeZone
from app.messages.categories import Category

router = APIRouter(prefix="/api", tags=["analytics"], responses=problem_responses(401, 403, 422))

Reader = Annotated[Principal, Depends(scope_checker(Scope.SMS_READ))]


@router.get(
    "/sms/analytics",
    response_model=Analytics,
    summary="Counts, rates, errors, segments and cost over a period",
    description="Messages created in [`from`, `to`) (at most 400 days), optionally of one "
    "`category`: counts by status, delivery and error rates, errors by Twilio code, segments, "
    "cost (Twilio's prices where reported, an estimate per segment otherwise), the same per "
    "category, and a daily series in `time_zone`. Periods past retention count from the daily "
    "aggregates kept of deleted messages, by UTC day. `422 invalid_period` for an empty, "
    "reversed or longer period.",
)
async def sms_analytics(
    _: Reader,
    session: SessionDep,
    settings: SettingsDep,
    from_: Annotated[
        Moment, Query(alias="from", description="Start (included), with a time zone.")
    ],
    to: Annotated[Moment, Query(description="End (excluded), with a time zone.")],
    category: Annotated[Category | None, Query(description="Only this category.")] = None,
    time_zone: Annotated[
        TimeZone, Query(description="IANA zone of the daily series (default UTC).")
    ] = "UTC",
) -> Analytics:
    return await service.analytics(
        session, settings, start=from_, end=to, category=category, time_zone=time_zone
    )
