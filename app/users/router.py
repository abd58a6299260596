from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from app.auth.dependencies import CurrentUser, UserManager
from app.core.deps import PhoneCipherDep, SessionDep, SettingsDep
from app.core.errors import problem_responses
from app.core.types import UserId
from app.users import service
from app.users.schemas import ErasureRecord, Profile, ProfileUpdate, UserUpsert

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


_ERASURE = (
    "Removes the profile, the encrypted number and its index, preferences, topic memberships, "
    "verifications and bookings. Messages not yet handed to Twilio are cancelled; every message "
    "of the user loses the user, the number and the body but stays, anonymous, in the counts "
    "(category, status, segments, price, error code); the events they were rendered from lose "
    "their data. The suppression list and consent events keep the number's blind index (the "
    "proof of an opt-out; a STOP keeps working). The erasure is recorded with a keyed hash of "
    "the id: `GET /api/users/{user_id}/erasure`."
)


@router.delete(
    "/user/profile",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Erase the signed-in user",
    description=_ERASURE,
    responses=problem_responses(404),
)
async def delete_own_profile(user: CurrentUser, session: SessionDep, settings: SettingsDep) -> None:
    await service.erase_user(session, settings, user.id, requested_by=service.SELF_REQUESTER)


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
    description=_ERASURE,
    responses=problem_responses(404),
)
async def delete_user(
    user_id: UserIdPath, principal: UserManager, session: SessionDep, settings: SettingsDep
) -> None:
    requested_by = service.erasure_requester(principal, user_id)
    await service.erase_user(session, settings, user_id, requested_by=requested_by)


@router.get(
    "/users/{user_id}/erasure",
    response_model=ErasureRecord,
    summary="Whether a user was erased, when and at whose request",
    description="The latest erasure of this id (`404 erasure_not_found`: none is recorded). "
    "The record keeps only a keyed hash of the id, so it answers for an id one already knows.",
    responses=problem_responses(404),
)
async def get_user_erasure(
    user_id: UserIdPath, _: UserManager, session: SessionDep, settings: SettingsDep
) -> ErasureRecord:
    return await service.get_erasure(session, settings, user_id)
