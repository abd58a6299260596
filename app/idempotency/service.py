"""Idempotency-Key on sending requests: the first answer is kept 24 h and replayed; the same
key with another body is refused; a retry while the first is still running gets 409."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.database import transaction
from app.idempotency import repository
from app.idempotency.exceptions import IdempotencyKeyInFlight, IdempotencyKeyReused

KEEP_FOR = timedelta(hours=24)
# Longer than any request takes; a request that died frees its key after this.
LEASE = timedelta(seconds=60)
REPLAY_HEADER = "Idempotent-Replayed"


class Idempotency:
    """One request's use of its key (or no key: then every method does nothing)."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], principal: str, key: str | None
    ) -> None:
        self._sessionmaker = sessionmaker
        self._principal = principal
        self._key = key
        self._claimed = False

    async def begin(self, operation: str, request: BaseModel) -> JSONResponse | None:
        """Claims the key, or answers as the first request did. Committed at once, on its own,
        so concurrent requests see the claim."""
        if self._key is None:
            return None
        fingerprint = hashlib.sha256(
            operation.encode() + b"\n" + request.model_dump_json().encode()
        ).digest()
        async with transaction(self._sessionmaker) as session:
            if await repository.claim(
                session, self._principal, self._key, fingerprint, lease=LEASE, keep=KEEP_FOR
            ):
                self._claimed = True
                return None
            existing = await repository.get(session, self._principal, self._key)
        if existing is None:  # expired and purged between the two statements: try once more
            return await self.begin(operation, request)
        if existing.request_hash != fingerprint:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used with another request; use a new key"
            )
        if existing.status_code is None:
            raise IdempotencyKeyInFlight(
                "a request with this Idempotency-Key is still running; retry shortly",
                headers={"Retry-After": "1"},
            )
        return JSONResponse(
            existing.response_body,
            status_code=existing.status_code,
            headers={REPLAY_HEADER: "true"},
        )

    async def complete(self, session: AsyncSession, status_code: int, body: Any) -> None:
        """Stores the answer in the request's own transaction: kept only if the work is."""
        if self._claimed and self._key is not None:
            await repository.complete(
                session, self._principal, self._key, status_code, jsonable_encoder(body)
            )

    async def release(self) -> None:
        """The request failed: free the key at once so the client can retry."""
        if self._claimed and self._key is not None:
            async with transaction(self._sessionmaker) as session:
                await repository.release(session, self._principal, self._key)


async def forget_user(session: AsyncSession, user_id: str) -> None:
    """A user is erased. Their own requests' answers are deleted (nobody can retry them now).
    Answers kept for services that name the user lose the user's id and, for a message, its
    masked number and body: a retry within the day is still answered, not sent again."""
    await repository.delete_for_principal(session, f"user:{user_id}")
    found = await repository.answers_naming_user(session, user_id)
    await repository.replace_answers(
        session,
        [(row.principal, row.key, _without_user(row.response_body, user_id)) for row in found],
    )


_ABOUT_THE_RECIPIENT = ("user_id", "to", "body")


def _without_user(value: Any, user_id: str) -> Any:
    if isinstance(value, list):
        return [_without_user(item, user_id) for item in value]
    if not isinstance(value, dict):
        return value
    if value.get("user_id") == user_id:
        value = {**value, **{name: None for name in _ABOUT_THE_RECIPIENT if name in value}}
    return {name: _without_user(item, user_id) for name, item in value.items()}


async def purge_expired(
    sessionmaker: async_sessionmaker[AsyncSession], *, batch: int = 1000
) -> int:
    """Deletes stored answers past their 24 h, a batch per short transaction."""
    purged = 0
    while True:
        async with transaction(sessionmaker) as session:
            done = await repository.purge_expired(session, batch=batch)
        purged += done
        if done < batch:
            return purged
