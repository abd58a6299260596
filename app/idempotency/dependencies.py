from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.dependencies import CurrentPrincipal
from app.core.database import transaction
from app.core.deps import SessionmakerDep
from app.idempotency.service import Idempotency

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Makes a retry of this request safe: the same key and body get the first "
        "answer again (for 24 h) instead of a second message.",
    ),
]


async def get_idempotency(
    principal: CurrentPrincipal, sessionmaker: SessionmakerDep, key: IdempotencyKeyHeader = None
) -> AsyncIterator[Idempotency]:
    guard = Idempotency(sessionmaker, f"{principal.kind}:{principal.id}", key)
    try:
        yield guard
    except BaseException:
        await guard.release()
        raise


# Declare it before SessionDep in a route: it is then torn down after the commit, so a
# failed commit releases the key too.
IdempotencyDep = Annotated[Idempotency, Depends(get_idempotency, scope="function")]


@dataclass(frozen=True, slots=True)
class IdempotentTransaction:
    """The request's transaction with its Idempotency-Key."""

    idempotency: Idempotency
    session: AsyncSession


async def get_idempotent_transaction(
    principal: CurrentPrincipal, sessionmaker: SessionmakerDep, key: IdempotencyKeyHeader = None
) -> AsyncIterator[IdempotentTransaction]:
    """IdempotencyDep and SessionDep in one dependency, for the hottest routes: each generator
    dependency costs FastAPI an exit stack entry per request. The same order: the commit
    first, then the key is released if anything (the commit included) failed."""
    guard = Idempotency(sessionmaker, f"{principal.kind}:{principal.id}", key)
    try:
        async with transaction(sessionmaker) as session:
            yield IdempotentTransaction(guard, session)
    except BaseException:
        await guard.release()
        raise


IdempotentTransactionDep = Annotated[
    IdempotentTransaction, Depends(get_idempotent_transaction, scope="function")
]
