"""Users and their profiles: created on first use, numbers normalised and stored encrypted."""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.core.crypto import PhoneCipher
from app.core.phone import InvalidPhoneNumber, normalize_sms_number
from app.core.settings import Settings
from app.idempotency import service as idempotency
from app.messages import repository as messages_repository
from app.preferences import service as preferences_service
from app.preferences.schemas import PreferencesUpdate
from app.users import repository
from app.users.erasures import Erasure
from app.users.exceptions import ErasureNotFound, InvalidPhoneNumberError, UserNotFound
from app.users.models import User
from app.users.schemas import ErasureRecord, Profile, ProfileUpdate, UserUpsert

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


# What a record of who asked says once that "who" is an erased user. Without a colon, it can
# never equal a principal's `kind:id`, so it makes nobody the owner of these rows.
ERASED_REQUESTER = "erased-user"
CLI_REQUESTER = "cli"
SELF_REQUESTER = "self"
# The erasure record's own key, derived from PHONE_BLIND_INDEX_KEY: a record's hash is never
# equal to a blind index or to any other keyed hash made from that key.
_ERASURE_KEY_LABEL = b"erasure-records"


def erasure_hash(settings: Settings, external_id: str) -> bytes:
    """HMAC-SHA256 of the user id: the same id always gives the same hash, so a record can
    answer "was this user erased?" without holding the id."""
    root = settings.phone_blind_index_key.get_secret_value().encode()
    key = hmac.new(root, _ERASURE_KEY_LABEL, hashlib.sha256).digest()
    return hmac.new(key, external_id.encode(), hashlib.sha256).digest()


def erasure_requester(principal: Principal, external_id: str) -> str:
    """Who asked, as messages record it (`api_key:<id>`, `user:<id>`); `self` for the user
    themself, so the record does not hold the id it was made to forget."""
    if principal.kind == "user" and principal.id == external_id:
        return SELF_REQUESTER
    return f"{principal.kind}:{principal.id}"


async def erase_user(
    session: AsyncSession, settings: Settings, external_id: str, *, requested_by: str
) -> Erasure:
    """Removes the user and everything that names them or their number, keeps the anonymous
    counts, and records that it happened:
    - the profile, encrypted number and index; preferences, topic memberships, verifications
      and bookings (deleted with the user);
    - their messages: not yet handed to Twilio ones are cancelled; all lose the user, number,
      index and body, and keep category, status, segments, price and error code;
    - the events those messages were rendered from lose their data (names, details);
    - what they asked for themselves no longer names them; their stored idempotent answers go,
      services' stored answers lose the user's id, number and body.
    The suppression list and consent events keep the number's blind index: the proof of an
    opt-out must stay, and a STOP must keep working for the number."""
    user = await repository.get_by_external_id(session, external_id, for_update=True)
    if user is None:
        raise UserNotFound(external_id)
    forgotten = await messages_repository.forget_recipient(session, user.id)
    as_requester = f"user:{external_id}"
    await messages_repository.forget_requester(session, as_requester, ERASED_REQUESTER)
    await repository.forget_erasure_requester(session, as_requester, ERASED_REQUESTER)
    await idempotency.forget_user(session, external_id)
    await repository.delete_by_external_id(session, external_id)
    erasure = await repository.add_erasure(
        session,
        Erasure(
            user_id_hash=erasure_hash(settings, external_id),
            requested_by=requested_by,
            messages_anonymised=forgotten.messages,
        ),
    )
    # The id stays out of the logs too: the erasure's own id finds the record.
    logger.info(
        "erased a user: erasure %s, %d messages anonymised (%d cancelled), %d notifications "
        "emptied",
        erasure.id,
        forgotten.messages,
        len(forgotten.cancelled),
        forgotten.notifications,
    )
    return erasure


async def get_erasure(session: AsyncSession, settings: Settings, external_id: str) -> ErasureRecord:
    """The latest erasure of this user id."""
    found = await repository.latest_erasure(session, erasure_hash(settings, external_id))
    if found is None:
        raise ErasureNotFound(f"no erasure of user `{external_id}` is recorded")
    return ErasureRecord(
        user_id=external_id,
        erased_at=found.erased_at,
        requested_by=found.requested_by,
        messages_anonymised=found.messages_anonymised,
    )


async def find_users(session: AsyncSession, external_ids: Sequence[str]) -> dict[str, User]:
    """The users among these ids that exist, by external id."""
    return {user.external_id: user for user in await repository.find_many(session, external_ids)}


async def users_by_id(session: AsyncSession, user_ids: Sequence[uuid.UUID]) -> list[User]:
    return await repository.get_many(session, user_ids)


async def time_zone_of(session: AsyncSession, user_id: uuid.UUID) -> str | None:
    return await repository.time_zone_of(session, user_id)


async def time_zones_of(
    session: AsyncSession, user_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, str | None]:
    return await repository.time_zones_of(session, user_ids)


async def user_by_id(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    found = await repository.get_many(session, [user_id])
    return found[0] if found else None
