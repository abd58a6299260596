from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import any_, cast, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY, UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.preferences.models import SmsPreferences


async def create_defaults(session: AsyncSession, user_ids: Sequence[uuid.UUID]) -> None:
    if not user_ids:
        return
    ids = select(func.unnest(cast(list(user_ids), ARRAY(UUID))))
    statement = (
        insert(SmsPreferences)
        .from_select([SmsPreferences.user_id], ids)
        .on_conflict_do_nothing(index_elements=[SmsPreferences.user_id])
    )
    await session.execute(statement)


async def get(session: AsyncSession, user_id: uuid.UUID) -> SmsPreferences:
    statement = select(SmsPreferences).where(SmsPreferences.user_id == user_id)
    return (await session.execute(statement)).scalar_one()


async def update_values(
    session: AsyncSession, user_id: uuid.UUID, changes: dict[str, bool]
) -> SmsPreferences:
    statement = (
        update(SmsPreferences)
        .where(SmsPreferences.user_id == user_id)
        .values(**changes)
        .returning(SmsPreferences)
        .execution_options(populate_existing=True)
    )
    return (await session.execute(statement)).scalar_one()


async def get_many(
    session: AsyncSession, user_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, SmsPreferences]:
    if not user_ids:
        return {}
    statement = select(SmsPreferences).where(
        SmsPreferences.user_id == any_(cast(list(user_ids), ARRAY(UUID)))
    )
    return {row.user_id: row for row in (await session.execute(statement)).scalars()}


_SWITCHES = tuple(
    column
    for column in SmsPreferences.__table__.columns
    if column.name not in ("user_id", "updated_at")
)


async def switches_of(
    session: AsyncSession, user_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[str, bool]]:
    """Each user's preferences as plain values (key → on), in one query, no ORM objects."""
    if not user_ids:
        return {}
    statement = select(SmsPreferences.user_id, *_SWITCHES).where(
        SmsPreferences.user_id == any_(cast(list(set(user_ids)), ARRAY(UUID)))
    )
    return {
        row[0]: dict(zip((c.name for c in _SWITCHES), row[1:], strict=True))
        for row in (await session.execute(statement)).all()
    }
