"""Service API keys: random, shown once, stored as a hash, scoped, revocable."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth import repository
from app.auth.exceptions import InvalidApiKey, InvalidKeyName
from app.auth.models import ApiKey
from app.auth.principal import Principal, Scope
from app.core.database import transaction

API_KEY_PREFIX = "smsk_"
NAME_MAX_LENGTH = 100
_DISPLAY_PREFIX_LENGTH = 12
# Writing last_used_at on every request would add a write to each call; once a minute is
# precise enough to spot unused keys.
_LAST_USED_PRECISION = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: ApiKey
    secret: str


def looks_like_api_key(token: str) -> bool:
    return token.startswith(API_KEY_PREFIX)


def hash_key(secret: str) -> bytes:
    # A plain SHA-256 is enough: keys carry 256 random bits, so there is nothing to brute-force
    # and a slow password hash would only tax every request.
    return hashlib.sha256(secret.encode()).digest()


async def create_key(session: AsyncSession, name: str, scopes: Iterable[Scope]) -> CreatedKey:
    name = name.strip()
    if not 0 < len(name) <= NAME_MAX_LENGTH:
        raise InvalidKeyName(f"a key's name has 1 to {NAME_MAX_LENGTH} characters")
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        name=name,
        prefix=secret[:_DISPLAY_PREFIX_LENGTH],
        key_hash=hash_key(secret),
        scopes=sorted({Scope(scope).value for scope in scopes}),
    )
    return CreatedKey(await repository.add(session, key), secret)


async def list_keys(session: AsyncSession, *, include_revoked: bool = False) -> Sequence[ApiKey]:
    return await repository.list_all(session, include_revoked=include_revoked)


async def revoke_key(session: AsyncSession, id_or_prefix: str) -> Sequence[ApiKey]:
    return await repository.revoke(session, id_or_prefix)


async def authenticate(sessionmaker: async_sessionmaker[AsyncSession], secret: str) -> Principal:
    """The key's principal. Its use is recorded in a transaction of its own, so a request
    that fails (and rolls back) still counts as a use."""
    async with transaction(sessionmaker) as session:
        key = await repository.get_active_by_hash(session, hash_key(secret))
        if key is None:
            raise InvalidApiKey("unknown or revoked API key")
        now = datetime.now(UTC)
        if key.last_used_at is None or now - key.last_used_at > _LAST_USED_PRECISION:
            await repository.touch(session, key.id)
    scopes = frozenset(Scope(scope) for scope in key.scopes if scope in Scope._value2member_map_)
    return Principal(kind="api_key", id=str(key.id), name=key.name, scopes=scopes)


class VerifiedKeys:
    """The principals of API keys verified lately, so that a service's steady stream of
    requests does not cost a database transaction each: a key is looked up again once its
    entry is `ttl_seconds` old. A revocation therefore takes effect in this process within
    `ttl_seconds` (API_KEY_CACHE_SECONDS); 0 looks every request up. Unknown and revoked keys
    are never kept, so a new key works at once and random tokens cannot fill the cache."""

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        # hash of the key -> (its principal, when the entry stops being trusted)
        self._entries: dict[bytes, tuple[Principal, float]] = {}
        # hash of the key -> its lookup under way: when an entry expires, the requests that
        # find it so wait for one lookup instead of each making its own.
        self._lookups: dict[bytes, asyncio.Future[Principal]] = {}

    async def authenticate(
        self, sessionmaker: async_sessionmaker[AsyncSession], secret: str
    ) -> Principal:
        digest = hash_key(secret)
        entry = self._entries.get(digest)
        if entry is not None and self._clock() < entry[1]:
            return entry[0]
        self._entries.pop(digest, None)
        if self._ttl <= 0:
            return await authenticate(sessionmaker, secret)
        lookup = self._lookups.get(digest)
        if lookup is None:
            lookup = asyncio.ensure_future(self._look_up(sessionmaker, secret, digest))
            self._lookups[digest] = lookup
        # Shielded: a waiter that goes away does not cancel the others' lookup.
        return await asyncio.shield(lookup)

    async def _look_up(
        self, sessionmaker: async_sessionmaker[AsyncSession], secret: str, digest: bytes
    ) -> Principal:
        try:
            now = self._clock()
            principal = await authenticate(sessionmaker, secret)
            self._entries[digest] = (principal, now + self._ttl)
            return principal
        finally:
            del self._lookups[digest]
