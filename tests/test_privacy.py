"""Phone numbers are encrypted at rest, found by a blind index, and masked in logs."""

from __future__ import annotations

import logging

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.crypto import PhoneCipher
from app.users.models import User
from tests.conftest import as_user

NUMBER = "+14155552671"


async def test_the_raw_tables_hold_no_plaintext_number(
    client: httpx.AsyncClient, session: AsyncSession, cipher: PhoneCipher
) -> None:
    await client.patch("/api/user/profile", json={"phone_number": NUMBER}, headers=as_user("amy"))

    dump = "\n".join((await session.execute(text("SELECT users::text FROM users"))).scalars().all())
    raw = (await session.execute(text("SELECT phone_encrypted FROM users"))).scalar_one()

    assert dump
    for form in (NUMBER, NUMBER[1:], "4155552671", "415) 555-2671"):
        assert form not in dump
        assert form.encode() not in raw
    assert cipher.decrypt(raw) == NUMBER


async def test_the_blind_index_finds_the_user_by_number(
    client: httpx.AsyncClient, session: AsyncSession, cipher: PhoneCipher
) -> None:
    await client.patch(
        "/api/user/profile", json={"phone_number": "(415) 555-2671"}, headers=as_user("ben")
    )
    await client.patch(
        "/api/user/profile", json={"phone_number": "+14155550123"}, headers=as_user("cat")
    )

    found = await session.scalars(
        select(User).where(User.phone_index == cipher.blind_index(NUMBER))
    )

    assert [user.external_id for user in found] == ["ben"]


async def test_logs_show_numbers_masked(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await client.patch("/api/user/profile", json={"phone_number": NUMBER}, headers=as_user("dan"))
    logging.getLogger("app.test").info("texting %s about booking 42", NUMBER)
    await client.post(
        "/api/sms/validate-phone", json={"phone_number": NUMBER}, headers=as_user("dan")
    )

    assert NUMBER not in caplog.text
    assert "+1415*****71" in caplog.text
