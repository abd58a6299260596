from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.idempotency.models import IdempotencyKey


async def claim(
    session: AsyncSession,
    principal: str,
    key: str,
    request_hash: bytes,
    *,
    lease: timedelta,
    keep: timedelta,
) -> bool:
    """Takes the key for this request: new, expired, or left by a request that died."""
    now = func.now()
    statement = (
        insert(IdempotencyKey)
        .values(
            principal=principal,
            key=key,
            request_hash=request_hash,
            locked_until=now + lease,
            expires_at=now + keep,
        )
        .on_conflict_do_update(
            index_elements=[IdempotencyKey.principal, IdempotencyKey.key],
            set_={
                "request_hash": request_hash,
                "locked_until": now + lease,
                "expires_at": now + keep,
                "status_code": None,
                "response_body": None,
                "created_at": now,
            },
            where=or_(
                IdempotencyKey.expires_at < now,
                (IdempotencyKey.status_code.is_(None)) & (IdempotencyKey.locked_until < now),
            ),
        )
        .returning(IdempotencyKey.key)
    )
    return (await session.execute(statement)).first() is not None


async def get(session: AsyncSession, principal: str, key: str) -> IdempotencyKey | None:
    statement = select(IdempotencyKey).where(
        IdempotencyKey.principal == principal, IdempotencyKey.key == key
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def complete(
    session: AsyncSession, principal: str, key: str, status_code: int, body: Any
) -> None:
    await session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.principal == principal, IdempotencyKey.key == key)
        .values(status_code=status_code, response_body=body, locked_until=None)
    )


async def release(session: AsyncSession, principal: str, key: str) -> None:
    await session.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.principal == principal,
            IdempotencyKey.key == key,
            IdempotencyKey.status_code.is_(None),
        )
    )


async def purge_expired(session: AsyncSession, *, batch: int = 1000) -> int:
    expired = (
        select(IdempotencyKey.principal, IdempotencyKey.key)
        .where(IdempotencyKey.expires_at < func.now())
        .limit(batch)
    )
    statement = (
        delete(IdempotencyKey)
        .where(IdempotencyKey.expires_at < func.now())
        .where(tuple_(IdempotencyKey.principal, IdempotencyKey.key).in_(expired))
        .returning(IdempotencyKey.key)
    )
    return len((await session.execute(statement)).all())


async def delete_for_principal(session: AsyncSession, principal: str) -> int:
    statement = (
        delete(IdempotencyKey)
        .where(IdempotencyKey.principal == principal)
        .returning(IdempotencyKey.key)
    )
    return len((await session.execute(statement)).all())


async def answers_naming_user(session: AsyncSession, user_id: str) -> list[IdempotencyKey]:
    """Stored answers holding an object whose `user_id` is this user's, at any depth: a
    message (`/send`), or an entry of `queued` / `skipped` (notify). A scan of the table:
    erasures are rare."""
    naming = func.jsonb_path_exists(
        IdempotencyKey.response_body,
        text("'$.** ? (@.user_id == $id)'::jsonpath"),
        func.jsonb_build_object("id", user_id),
    )
    statement = select(IdempotencyKey).where(naming).with_for_update()
    return list((await session.execute(statement)).scalars())


async def replace_answers(session: AsyncSession, answers: Sequence[tuple[str, str, Any]]) -> None:
    """(principal, key, body) each: an UPDATE by primary key, batched."""
    if answers:
        await session.execute(
            update(IdempotencyKey),
            [
                {"principal": principal, "key": key, "response_body": body}
                for principal, key, body in answers
            ],
        )
