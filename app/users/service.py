"""Users and their profiles: created on first use, numbers normalised and stored encrypted."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.crypto import PhoneCipher
from app.core.phone import InvalidPhoneNumber, normalize_sms_number
from app.core.settings import Settings
from app.messages import repository as messages_repository
from app.preferences import service as preferences_service
from app.preferences.schemas import PreferencesUpdate
from app.users import repository
from app.users.exceptions import InvalidPhoneNumberError, UserNotFound
from app.users.models import User
from app.users.schemas import Profile, ProfileUpdate, UserUpsert

logger = logging.getLogger(__name__)


async def _create_missing(session: AsyncSession, external_ids: Sequence[str]) -> list[uuid.UUID]:
    # Sorted, so concurrent requests take their row locks in one order and never deadlock.
    created = await repository.insert_missing(session, sorted(set(external_ids)))
    await preferences_service.create_defaults(session, created)
    return created


async def ensure_users(session: AsyncSession, external_ids: Sequence[str]) -> dict[str, uuid.UUID]:
    """The internal ids of these users, creating (with default preferences) those not seen yet."""
    await _create_missing(session, external_ids)
    return await repository.ids_by_external_id(session, sorted(set(external_ids)))


async def get_or_create_user(
    session: AsyncSession, external_id: str, *, for_update: bool = False
) -> tuple[User, bool]:
    """The user, created on first use. `for_update` locks the row for a change."""
    user = await repository.get_by_external_id(session, external_id, for_update=for_update)
    if user is not None:
        return user, False
    created = await _create_missing(session, [external_id])
    user = await repository.get_by_external_id(session, external_id, for_update=for_update)
    assert user is not None
    return user, bool(created)


async def get_user(session: AsyncSession, external_id: str, *, for_update: bool = False) -> User:
    user = await repository.get_by_external_id(session, external_id, for_update=for_update)
    if user is None:
        raise UserNotFound(external_id)
    return user


async def verified_elsewhere(session: AsyncSession, phone_index: bytes, user_id: uuid.UUID) -> bool:
    """Whether another user has verified this number."""
    return await repository.verified_elsewhere(session, phone_index, user_id)


async def find_user(session: AsyncSession, external_id: str) -> User | None:
    return await repository.get_by_external_id(session, external_id)


async def external_id_of(session: AsyncSession, user_id: uuid.UUID) -> str | None:
    return await repository.external_id_of(session, user_id)


async def read_profile(session: AsyncSession, cipher: PhoneCipher, user: User) -> Profile:
    preferences = await preferences_service.get_preferences(session, user.id)
    return Profile(
        user_id=user.external_id,
        phone_number=cipher.decrypt(user.phone_encrypted) if user.phone_encrypted else None,
        phone_country=user.phone_region,
        phone_verified=user.phone_verified_at is not None,
        phone_verified_at=user.phone_verified_at,
        sms_enabled=preferences.sms_enabled,
        locale=user.locale,
        time_zone=user.time_zone,
        created_at=user.created_at,
        updated_at=user.updated_at,
    )


async def update_profile(
    session: AsyncSession,
    cipher: PhoneCipher,
    settings: Settings,
    user: User,
    update: ProfileUpdate,
) -> Profile:
    given = update.model_fields_set
    if "phone_number" in given:
        _set_phone_number(user, cipher, settings, update.phone_number, update.country)
    if "locale" in given and update.locale is not None:
        user.locale = update.locale
    if "time_zone" in given:
        user.time_zone = update.time_zone
    if isinstance(update, UserUpsert) and update.phone_verified is not None:
        if not update.phone_verified:
            user.phone_verified_at = None
        elif user.phone_verified_at is None:
            user.phone_verified_at = datetime.now(UTC)
    if update.sms_enabled is not None:
        await preferences_service.update_preferences(
            session, user.id, PreferencesUpdate(sms_enabled=update.sms_enabled)
        )
    if given:
        user.updated_at = datetime.now(UTC)
    await session.flush()
    return await read_profile(session, cipher, user)


def _set_phone_number(
    user: User, cipher: PhoneCipher, settings: Settings, raw: str | None, country: str | None
) -> None:
    if raw is None:
        user.phone_encrypted = user.phone_index = user.phone_region = None
        user.phone_verified_at = None
        return
    try:
        check = normalize_sms_number(raw, country, settings.default_phone_region)
    except InvalidPhoneNumber as error:
        raise InvalidPhoneNumberError(error) from error
    assert check.e164 is not None
    index = cipher.blind_index(check.e164)
    if index == user.phone_index:
        return  # the same number, however written: its verification stands
    user.phone_encrypted = cipher.encrypt(check.e164)
    user.phone_index = index
    user.phone_region = check.region
    user.phone_verified_at = None


async def erase_user(session: AsyncSession, external_id: str) -> None:
    """Removes the user, their number, index, preferences and topic memberships; their
    messages not yet sent are cancelled and every message forgets the number."""
    user = await repository.get_by_external_id(session, external_id, for_update=True)
    if user is None:
        raise UserNotFound(external_id)
    await messages_repository.forget_recipient(session, user.id)
    await repository.delete_by_external_id(session, external_id)
    logger.info("erased user %s", external_id)
