from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from app.auth.dependencies import CurrentUser, UserManager
from app.core.deps import SessionDep
from app.core.errors import problem_responses
from app.core.types import UserId
from app.preferences import service
from app.preferences.schemas import Preferences, PreferencesUpdate
from app.users.service import get_or_create_user, get_user

router = APIRouter(
    prefix="/api", tags=["preferences"], responses=problem_responses(400, 401, 403, 413, 422)
)

UserIdPath = Annotated[UserId, Path(description="The platform's id for the user.")]


@router.get("/sms/preferences", response_model=Preferences, summary="The user's SMS preferences")
async def get_own_preferences(user: CurrentUser, session: SessionDep) -> Preferences:
    record, _ = await get_or_create_user(session, user.id)
    return await service.get_preferences(session, record.id)


@router.put(
    "/sms/preferences",
    response_model=Preferences,
    summary="Change the user's SMS preferences (partial)",
    description="Only the keys present change; unknown keys are refused with 422.",
)
async def put_own_preferences(
    update: PreferencesUpdate, user: CurrentUser, session: SessionDep
) -> Preferences:
    record, _ = await get_or_create_user(session, user.id, for_update=True)
    return await service.update_preferences(session, record.id, update)


@router.get(
    "/users/{user_id}/preferences",
    response_model=Preferences,
    summary="A user's SMS preferences (services)",
    responses=problem_responses(404),
)
async def get_user_preferences(
    user_id: UserIdPath, _: UserManager, session: SessionDep
) -> Preferences:
    return await service.get_preferences(session, (await get_user(session, user_id)).id)


@router.put(
    "/users/{user_id}/preferences",
    response_model=Preferences,
    summary="Change a user's SMS preferences (services, partial)",
    responses=problem_responses(404),
)
async def put_user_preferences(
    user_id: UserIdPath, update: PreferencesUpdate, _: UserManager, session: SessionDep
) -> Preferences:
    record = await get_user(session, user_id, for_update=True)
    return await service.update_preferences(session, record.id, update)
