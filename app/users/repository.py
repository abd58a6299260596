from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import String, any_, cast, delete, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.ext.asyncio import AsyncSession

from app.users.erasures import Erasure
from app.users.models import User


async def get_by_external_id(
    session: AsyncSession, external_id: str, *, for_update: bool = False
) -> User | None:
    """`for_update` locks the row until the transaction ends: writers take turns, each
    deciding on what the previous one committed."""
    statement = select(User).where(User.external_id == external_id)
    if for_update:
        statement = statement.with_for_update().execution_options(populate_existing=True)
    return (await session.execute(statement)).scalar_one_or_none()


async def verified_elsewhere(session: AsyncSession, phone_index: bytes, user_id: uuid.UUID) -> bool:
    statement = select(User.id).where(
        User.phone_index == phone_index,
        User.phone_verified_at.is_not(None),
        User.id != user_id,
    )
    return (await session.execute(statement.limit(1))).first() is not None


async def external_id_of(session: AsyncSession, user_id: uuid.UUID) -> str | None:
    statement = select(User.external_id).where(User.id == user_id)
    return (await session.execute(statement)).scalar_one_or_none()


async def insert_missing(session: AsyncSession, external_ids: Sequence[str]) -> list[uuid.UUID]:
    """Creates the users that do not exist yet, in one statement; returns the new ids."""
    names = select(func.gen_random_uuid(), func.unnest(cast(list(external_ids), ARRAY(String))))
    statement = (
        insert(User)
        .from_select([User.id, User.external_id], names)
        .on_conflict_do_nothing(index_elements=[User.external_id])
        .returning(User.id)
    )
    return list((await session.execute(statement)).scalars())


async def ids_by_external_id(
    session: AsyncSession, external_ids: Sequence[str]
) -> dict[str, uuid.UUID]:
    statement = select(User.external_id, User.id).where(
        User.external_id == any_(cast(list(external_ids), ARRAY(String)))
    )
    return {row[0]: row[1] for row in (await session.execute(statement)).all()}


async def delete_by_external_id(session: AsyncSession, external_id: str) -> bool:
    statement = delete(User).where(User.external_id == external_id).returning(User.id)
    return (await session.execute(statement)).scalar_one_or_none() is not None


async def find_many(session: AsyncSession, external_ids: Sequence[str]) -> list[User]:
    if not external_ids:
        return []
    statement = select(User).where(
        User.external_id == any_(cast(list(external_ids), ARRAY(String)))
    )
    return list((await session.execute(statement)).scalars())


async def get_many(session: AsyncSession, user_ids: Sequence[uuid.UUID]) -> list[User]:
    if not user_ids:
        return []
    statement = select(User).where(User.id.in_(list(user_ids))).order_by(User.external_id)
    return list((await session.execute(statement)).scalars())


async def time_zone_of(session: AsyncSession, user_id: uuid.UUID) -> str | None:
    statement = select(User.time_zone).where(User.id == user_id)
    return (await session.execute(statement)).scalar_one_or_none()


async def time_zones_of(
    session: AsyncSession, user_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, str | None]:
    if not user_ids:
        return {}
    statement = select(User.id, User.time_zone).where(
        User.id == any_(cast(list(set(user_ids)), ARRAY(PG_UUID)))
    )
    return {row[0]: row[1] for row in (await session.execute(statement)).all()}


async def add_erasure(session: AsyncSession, erasure: Erasure) -> Erasure:
    session.add(erasure)
    await session.flush()
    await session.refresh(erasure)  # erased_at is the database's
    return erasure


async def latest_erasure(session: AsyncSession, user_id_hash: bytes) -> Erasure | None:
    statement = (
        select(Erasure)
        .where(Erasure.user_id_hash == user_id_hash)
        .order_by(Erasure.erased_at.desc(), Erasure.id.desc())
        .limit(1)
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def forget_erasure_requester(
    session: AsyncSession, requested_by: str, replacement: str
) -> None:
    await session.execute(
        update(Erasure).where(Erasure.requested_by == requested_by).values(requested_by=replacement)
    )
