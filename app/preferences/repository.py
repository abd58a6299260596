from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import cast, func, select, update
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
