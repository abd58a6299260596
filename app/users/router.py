from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from app.auth.dependencies import CurrentUser, UserManager
from app.core.deps import PhoneCipherDep, SessionDep, SettingsDep
from app.core.errors import problem_responses
from app.core.types import UserId
from app.users import service
from app.users.schemas import Profile, ProfileUpdate, UserUpsert

router = APIRouter(
    prefix="/api", tags=["users"], responses=problem_responses(400, 401, 403, 413, 422)
)

UserIdPath = Annotated[UserId, Path(description="The platform's id for the user.")]


@router.get("/user/profile", response_model=Profile, summary="The signed-in user's profile")
async def get_own_profile(
    user: CurrentUser, session: SessionDep, cipher: PhoneCipherDep
) -> Profile:
    record, _ = await service.get_or_create_user(session, user.id)
    return await service.read_profile(session, cipher, record)


async def update_own_profile(
    user: CurrentUser,
    update: ProfileUpdate,
    session: SessionDep,
    cipher: PhoneCipherDep,
    settings: SettingsDep,
) -> Profile:
    record, _ = await service.get_or_create_user(session, user.id, for_update=True)
    return await service.update_profile(session, cipher, settings, record, update)


router.add_api_route(
    "/user/profile",
    update_own_profile,
    methods=["PATCH"],
    response_model=Profile,
    summary="Change the signed-in user's profile (partial)",
    description="Only the fields present change. A new number clears its verification.",
)
router.add_api_route(
    "/user/profile",
    update_own_profile,
    methods=["POST"],
    name="create_or_update_own_profile",
    response_model=Profile,
    summary="Create or change the signed-in user's profile (same as PATCH)",
    description="Kept for clients of the ticket system, which used POST for updates.",
)


@router.delete(
    "/user/profile",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Erase the signed-in user",
    responses=problem_responses(404),
)
async def delete_own_profile(user: CurrentUser, session: SessionDep) -> None:
    await service.erase_user(session, user.id)


@router.get(
    "/users/{user_id}",
    response_model=Profile,
    summary="A user's profile (services)",
    responses=problem_responses(404),
)
async def get_user_profile(
    user_id: UserIdPath, _: UserManager, session: SessionDep, cipher: PhoneCipherDep
) -> Profile:
    return await service.read_profile(session, cipher, await service.get_user(session, user_id))


@router.put(
    "/users/{user_id}",
    response_model=Profile,
    summary="Create or change a user (services)",
    description="Creates the user if needed (201), else changes the fields given (200); "
    "fields left out keep their value.",
    responses={201: {"description": "Created", "model": Profile}},
)
async def put_user(
    user_id: UserIdPath,
    update: UserUpsert,
    _: UserManager,
    session: SessionDep,
    cipher: PhoneCipherDep,
    settings: SettingsDep,
    response: Response,
) -> Profile:
    record, created = await service.get_or_create_user(session, user_id, for_update=True)
    if created:
        response.status_code = status.HTTP_201_CREATED
    return await service.update_profile(session, cipher, settings, record, update)


@router.delete(
    "/users/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Erase a user (services)",
    responses=problem_responses(404),
)
async def delete_user(user_id: UserIdPath, _: UserManager, session: SessionDep) -> None:
    await service.erase_user(session, user_id)
