from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.codes.models import Verification
from app.users.models import User


async def replace(session: AsyncSession, verification: Verification) -> Verification:
    """The new code replaces the user's previous one for the same purpose. Requests for the
    same user take turns (on the user's row): otherwise two at once each delete what they
    see, then both insert, and one fails on the (user, purpose) unique key."""
    await session.execute(
        select(User.id).where(User.id == verification.user_id).with_for_update(key_share=True)
    )
    await session.execute(
        delete(Verification).where(
            Verification.user_id == verification.user_id,
            Verification.purpose == verification.purpose,
        )
    )
    session.add(verification)
    await session.flush()
    return verification


async def current(session: AsyncSession, user_id: uuid.UUID, purpose: str) -> Verification | None:
    statement = (
        select(Verification)
        .where(Verification.user_id == user_id, Verification.purpose == purpose)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def for_message(session: AsyncSession, message_id: uuid.UUID) -> Verification | None:
    statement = (
        select(Verification)
        .where(Verification.message_id == message_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def set_code(
    session: AsyncSession, verification_id: uuid.UUID, code_hash: bytes, expires_at: datetime
) -> None:
    await session.execute(
        update(Verification)
        .where(Verification.id == verification_id)
        .values(code_hash=code_hash, expires_at=expires_at, wrong_tries=0)
    )
