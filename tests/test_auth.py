"""Who may call what: API keys with scopes, end-user JWTs, and the errors for everyone else."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import cast

import httpx
import jwt
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth import api_keys
from app.auth.exceptions import InvalidApiKey
from app.auth.models import ApiKey
from app.auth.principal import Scope
from tests.conftest import as_user, bearer, user_token
from tests.support import RsaKeys

MakeKey = Callable[..., Awaitable[dict[str, str]]]


async def test_no_credentials_is_a_401_problem_with_a_challenge(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/user/profile")

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["code"] == "missing_credentials"


@pytest.mark.parametrize(
    "header",
    ["Basic YWxpY2U6c2VjcmV0", "Bearer", "Bearer not-a-jwt", "Bearer a.b.c", "Token abc"],
)
async def test_malformed_credentials_are_401(client: httpx.AsyncClient, header: str) -> None:
    response = await client.get("/api/user/profile", headers={"Authorization": header})

    assert response.status_code == 401
    assert response.json()["code"] in {"missing_credentials", "invalid_token"}


async def test_an_expired_token_is_401_token_expired(client: httpx.AsyncClient) -> None:
    token = user_token("alice", expires_in=timedelta(minutes=-5))

    response = await client.get("/api/user/profile", headers=bearer(token))

    assert response.status_code == 401
    assert response.json()["code"] == "token_expired"


async def test_a_token_signed_with_another_secret_is_401(client: httpx.AsyncClient) -> None:
    token = user_token("alice", secret="someone-elses-secret-of-enough-length!")

    response = await client.get("/api/user/profile", headers=bearer(token))

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"


async def test_an_unsigned_token_is_refused(client: httpx.AsyncClient) -> None:
    token = jwt.encode({"sub": "alice", "exp": 4102444800}, key="", algorithm="none")

    response = await client.get("/api/user/profile", headers=bearer(token))

    assert response.status_code == 401


async def test_rs256_tokens_from_the_identity_provider_are_accepted(
    client: httpx.AsyncClient, rsa_keys: RsaKeys
) -> None:
    token = jwt.encode(
        {"sub": "rsa-user", "exp": 4102444800}, rsa_keys.private_pem, algorithm="RS256"
    )

    response = await client.get("/api/user/profile", headers=bearer(token))

    assert response.status_code == 200
    assert response.json()["user_id"] == "rsa-user"


async def test_hs256_signed_with_the_public_key_is_refused(
    client: httpx.AsyncClient, rsa_keys: RsaKeys
) -> None:
    # Algorithm confusion: the public key is public, so it must never serve as an HMAC secret.
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps({"sub": "mallory", "exp": 4102444800, "admin": True}).encode())
    signature = hmac.new(
        rsa_keys.public_pem.encode(), f"{header}.{payload}".encode(), hashlib.sha256
    ).digest()

    response = await client.get(
        "/api/users/alice", headers=bearer(f"{header}.{payload}.{b64(signature)}")
    )

    assert response.status_code == 401


async def test_a_key_without_the_scope_gets_403(
    client: httpx.AsyncClient, make_api_key: MakeKey
) -> None:
    headers = await make_api_key(Scope.SMS_SEND)

    response = await client.get("/api/users/alice", headers=headers)

    assert response.status_code == 403
    assert response.json()["code"] == "missing_scope"
    assert "users:write" in response.json()["detail"]


async def test_an_admin_key_may_do_everything(
    client: httpx.AsyncClient, make_api_key: MakeKey
) -> None:
    headers = await make_api_key(Scope.ADMIN)

    response = await client.put("/api/users/alice", json={}, headers=headers)

    assert response.status_code == 201


async def test_an_admin_user_may_manage_other_users(client: httpx.AsyncClient) -> None:
    response = await client.put("/api/users/bob", json={}, headers=as_user("root", admin=True))

    assert response.status_code == 201


async def test_a_service_key_cannot_use_the_end_user_endpoints(
    client: httpx.AsyncClient, make_api_key: MakeKey
) -> None:
    headers = await make_api_key(Scope.ADMIN)

    response = await client.get("/api/user/profile", headers=headers)

    assert response.status_code == 403
    assert response.json()["code"] == "user_token_required"


async def test_unknown_and_revoked_keys_are_401(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    created = await api_keys.create_key(session, "to-revoke", [Scope.USERS_WRITE])
    await session.commit()
    await api_keys.revoke_key(session, created.key.prefix)
    await session.commit()

    revoked = await client.get("/api/users/x", headers=bearer(created.secret))
    unknown = await client.get("/api/users/x", headers=bearer("smsk_" + "A" * 43))

    assert revoked.status_code == 401
    assert revoked.json()["code"] == "invalid_api_key"
    assert unknown.status_code == 401
    assert unknown.json()["code"] == "invalid_api_key"


@pytest.fixture
async def created(session: AsyncSession) -> api_keys.CreatedKey:
    """A committed key with sms:send."""
    key = await api_keys.create_key(session, "billing", [Scope.SMS_SEND])
    await session.commit()
    return key


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_revoked_key_is_refused_once_its_verification_is_older_than_the_ttl(
    sessionmaker: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    created: api_keys.CreatedKey,
) -> None:
    clock = FakeClock()
    keys = api_keys.VerifiedKeys(ttl_seconds=5, clock=clock)
    first = await keys.authenticate(sessionmaker, created.secret)

    await api_keys.revoke_key(session, created.key.prefix)
    await session.commit()
    clock.now += 4.9
    still_trusted = await keys.authenticate(sessionmaker, created.secret)
    clock.now += 0.1

    assert first.id == str(created.key.id)
    assert first.scopes == {Scope.SMS_SEND}
    assert still_trusted == first
    with pytest.raises(InvalidApiKey):
        await keys.authenticate(sessionmaker, created.secret)


async def test_without_a_ttl_a_revocation_takes_effect_at_once(
    sessionmaker: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    created: api_keys.CreatedKey,
) -> None:
    keys = api_keys.VerifiedKeys(ttl_seconds=0)
    await keys.authenticate(sessionmaker, created.secret)

    await api_keys.revoke_key(session, created.key.prefix)
    await session.commit()

    with pytest.raises(InvalidApiKey):
        await keys.authenticate(sessionmaker, created.secret)


class CountingSessionmaker:
    """A sessionmaker that counts the sessions opened: one per key lookup."""

    def __init__(self, inner: async_sessionmaker[AsyncSession]) -> None:
        self.inner = inner
        self.opened = 0

    def __call__(self) -> AsyncSession:
        self.opened += 1
        return self.inner()


async def test_requests_that_find_a_key_expired_share_one_lookup(
    sessionmaker: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    created: api_keys.CreatedKey,
) -> None:
    clock = FakeClock()
    keys = api_keys.VerifiedKeys(ttl_seconds=5, clock=clock)
    counting = CountingSessionmaker(sessionmaker)
    lookups = cast(async_sessionmaker[AsyncSession], counting)
    await keys.authenticate(lookups, created.secret)
    clock.now += 5

    principals = await asyncio.gather(
        *(keys.authenticate(lookups, created.secret) for _ in range(10))
    )

    assert counting.opened == 2
    assert {principal.id for principal in principals} == {str(created.key.id)}
    await keys.authenticate(lookups, created.secret)  # fresh again: no lookup
    assert counting.opened == 2


async def test_a_key_refused_once_is_not_remembered_as_refused(
    sessionmaker: async_sessionmaker[AsyncSession], session: AsyncSession
) -> None:
    """Only verified keys are kept: a token refused now is looked up again next time."""
    keys = api_keys.VerifiedKeys(ttl_seconds=5)
    created = await api_keys.create_key(session, "billing", [Scope.SMS_SEND])
    await session.rollback()  # the key does not exist (yet)
    with pytest.raises(InvalidApiKey):
        await keys.authenticate(sessionmaker, created.secret)
    session.add(created.key)
    await session.commit()

    principal = await keys.authenticate(sessionmaker, created.secret)

    assert principal.id == str(created.key.id)


async def test_keys_are_stored_hashed_and_their_use_is_recorded(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    created = await api_keys.create_key(session, "booking", [Scope.USERS_WRITE])
    await session.commit()
    assert created.key.last_used_at is None

    await client.get("/api/users/x", headers=bearer(created.secret))

    raw = (await session.execute(text("SELECT api_keys::text FROM api_keys"))).scalars().all()
    assert raw
    assert not any(created.secret in row for row in raw)
    assert not any(created.secret[12:] in row for row in raw)
    key = await session.scalar(select(ApiKey).where(ApiKey.id == created.key.id))
    assert key is not None
    await session.refresh(key)
    assert key.last_used_at is not None


@pytest.mark.parametrize("subject", ["nul\x00byte", "with space", "a" * 256, ""])
async def test_a_token_whose_subject_is_not_a_usable_user_id_is_401(
    client: httpx.AsyncClient, subject: str
) -> None:
    response = await client.get("/api/user/profile", headers=bearer(user_token(subject)))

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"
