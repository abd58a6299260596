from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app.preferences import repository
from app.preferences.schemas import Preferences, PreferencesUpdate


async def create_defaults(session: AsyncSession, user_ids: Sequence[uuid.UUID]) -> None:
    await repository.create_defaults(session, user_ids)


async def get_preferences(session: AsyncSession, user_id: uuid.UUID) -> Preferences:
    return Preferences.model_validate(await repository.get(session, user_id))


async def update_preferences(
    session: AsyncSession, user_id: uuid.UUID, update: PreferencesUpdate
) -> Preferences:
    changes = update.changes()
    if not changes:
        return await get_preferences(session, user_id)
    return Preferences.model_validate(await repository.update_values(session, user_id, changes))


async def get_many(
    session: AsyncSession, user_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Preferences]:
    rows = await repository.get_many(session, user_ids)
    return {user_id: Preferences.model_validate(row) for user_id, row in rows.items()}


async def switches_of(
    session: AsyncSession, user_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[str, bool]]:
    """Many users' preferences at once, as key → on (a batch's send-time check)."""
    return await repository.switches_of(session, user_ids)
