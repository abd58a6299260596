from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import (
    ColumnElement,
    Exists,
    LargeBinary,
    any_,
    bindparam,
    cast,
    delete,
    exists,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.optouts.models import ConsentEvent, Suppression

# Core on the session's connection, built once: through the ORM this lookup, on the path of
# every POST /api/sms/send, cost more CPU than the INSERT of the message.
_SUPPRESSED = select(Suppression.__table__.c.phone_index).where(
    Suppression.__table__.c.phone_index == bindparam("phone_index")
)


async def is_suppressed(session: AsyncSession, phone_index: bytes) -> bool:
    connection = await session.connection()
    found = await connection.execute(_SUPPRESSED, {"phone_index": phone_index})
    return found.first() is not None


def is_suppressed_clause(phone_index: ColumnElement[bytes]) -> Exists:
    """`is_suppressed` as a clause, for a statement to check it as it writes."""
    return exists().where(Suppression.__table__.c.phone_index == phone_index)


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
