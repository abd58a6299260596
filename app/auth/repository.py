from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import ApiKey


async def add(session: AsyncSession, key: ApiKey) -> ApiKey:
    session.add(key)
    await session.flush()
    await session.refresh(key)
    return key


async def get_active_by_hash(session: AsyncSession, key_hash: bytes) -> ApiKey | None:
    statement = select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    return (await session.execute(statement)).scalar_one_or_none()


async def list_all(session: AsyncSession, *, include_revoked: bool) -> Sequence[ApiKey]:
    statement = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if not include_revoked:
        statement = statement.where(ApiKey.revoked_at.is_(None))
    return (await session.execute(statement)).scalars().all()


async def touch(session: AsyncSession, key_id: uuid.UUID) -> None:
    await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=func.now()))


async def revoke(session: AsyncSession, id_or_prefix: str) -> Sequence[ApiKey]:
    """Revokes the key with this id or display prefix; returns what it revoked."""
    conditions = [ApiKey.prefix == id_or_prefix]
    with contextlib.suppress(ValueError):
        conditions.append(ApiKey.id == uuid.UUID(id_or_prefix))
    statement = (
        update(ApiKey)
        .where(or_(*conditions), ApiKey.revoked_at.is_(None))
        .values(revoked_at=func.now())
        .returning(ApiKey)
    )
    return (await session.execute(statement)).scalars().all()
