from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header

from app.auth.dependencies import CurrentPrincipal
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
