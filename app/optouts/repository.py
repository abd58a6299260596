from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import LargeBinary, any_, cast, delete, select
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.optouts.models import ConsentEvent, Suppression


async def is_suppressed(session: AsyncSession, phone_index: bytes) -> bool:
    statement = select(Suppression.phone_index).where(Suppression.phone_index == phone_index)
    return (await session.execute(statement)).first() is not None


async def suppress(session: AsyncSession, phone_index: bytes, reason: str) -> bool:
    """Adds the number; False when it was already suppressed."""
    statement = (
        insert(Suppression)
        .values(phone_index=phone_index, reason=reason)
        .on_conflict_do_nothing()
        .returning(Suppression.phone_index)
    )
    return (await session.execute(statement)).first() is not None


async def unsuppress(session: AsyncSession, phone_index: bytes) -> bool:
    statement = (
        delete(Suppression)
        .where(Suppression.phone_index == phone_index)
        .returning(Suppression.phone_index)
    )
    return (await session.execute(statement)).first() is not None


async def record_consent(
    session: AsyncSession,
    phone_index: bytes,
    *,
    kind: str,
    source: str,
    keyword: str | None = None,
    message_sid: str | None = None,
) -> None:
    session.add(
        ConsentEvent(
            phone_index=phone_index,
            kind=kind,
            source=source,
            keyword=keyword,
            message_sid=message_sid,
        )
    )
    await session.flush()


async def suppressed_among(session: AsyncSession, phone_indexes: Sequence[bytes]) -> set[bytes]:
    if not phone_indexes:
        return set()
    statement = select(Suppression.phone_index).where(
        Suppression.phone_index == any_(cast(list(phone_indexes), ARRAY(LargeBinary)))
    )
    return set((await session.execute(statement)).scalars())
