"""Helpers of the sending tests (outbox, delivery status, inbound): message rows, Twilio's
answers as respx serves them, and requests signed the way Twilio signs them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.crypto import PhoneCipher
from app.core.database import transaction
from app.core.settings import Settings
from app.messages.models import Message, MessageEvent
from app.optouts.models import ConsentEvent, Suppression

TO = "+14155552671"
OTHER = "+14155552672"


def twilio_base(settings: Settings) -> str:
    """Where the service's Twilio client sends (the sandbox account in tests)."""
    account = settings.twilio
    return f"{account.base_url}/2010-04-01/Accounts/{account.account_sid}"


def new_sid() -> str:
    return "SM" + uuid.uuid4().hex


def resource(
    sid: str,
    *,
    status: str = "queued",
    to: str = TO,
    body: str = "hi",
    created: datetime | None = None,
    **changes: Any,
) -> dict[str, Any]:
    """A Message resource as Twilio answers it (the fields the service reads, and a few more)."""
    when = format_datetime(created or datetime.now(UTC), usegmt=True)
    return {
        "sid": sid,
        "account_sid": "AC" + "5a" * 16,
        "status": status,
        "to": to,
        "from": "+15005550006",
        "body": body,
        "num_segments": "1",
        "price": None,
        "price_unit": "USD",
        "error_code": None,
        "error_message": None,
        "messaging_service_sid": None,
        "date_created": when,
        "date_updated": when,
        "date_sent": None,
        "uri": f"/2010-04-01/Accounts/AC{'5a' * 16}/Messages/{sid}.json",
        **changes,
    }


def created(sid: str, **changes: Any) -> httpx.Response:
    return httpx.Response(201, json=resource(sid, **changes))


def page(*messages: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json={"messages": list(messages), "next_page_uri": None})


def twilio_error(status: int, code: int, message: str = "error") -> httpx.Response:
    return httpx.Response(
        status,
        json={
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
    )


async def add_message(
    sessionmaker: async_sessionmaker[AsyncSession],
    cipher: PhoneCipher,
    *,
    to: str = TO,
    body: str = "hi",
    status: str = "queued",
    **columns: Any,
) -> uuid.UUID:
    """A committed message row, due now (next_attempt_at an hour ago: the database's now() is
    the test transaction's start) and valid for hours."""
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "to_encrypted": cipher.encrypt(to),
        "to_index": cipher.blind_index(to),
        "to_region": "US",
        "body": body,
        "category": "transactional",
        "status": status,
        "encoding": "GSM-7",
        "segments": 1,
        "requested_by": "api_key:test",
        "next_attempt_at": now - timedelta(hours=1),
        "expires_at": now + timedelta(hours=10),
        **columns,
    }
    async with transaction(sessionmaker) as session:
        message = Message(**values)
        session.add(message)
        await session.flush()
        return message.id


async def set_columns(
    sessionmaker: async_sessionmaker[AsyncSession], message_id: uuid.UUID, **values: Any
) -> None:
    async with transaction(sessionmaker) as session:
        await session.execute(update(Message).where(Message.id == message_id).values(**values))


async def make_due(sessionmaker: async_sessionmaker[AsyncSession], message_id: uuid.UUID) -> None:
    """The retry's time has come (instead of waiting for it)."""
    await set_columns(
        sessionmaker, message_id, next_attempt_at=datetime.now(UTC) - timedelta(hours=1)
    )


async def load(sessionmaker: async_sessionmaker[AsyncSession], message_id: uuid.UUID) -> Message:
    async with sessionmaker() as session:
        found = await session.get(Message, message_id, populate_existing=True)
        assert found is not None
        return found


async def events(
    sessionmaker: async_sessionmaker[AsyncSession], message_id: uuid.UUID
) -> list[tuple[str, str]]:
    """(status, source) of each event, oldest first."""
    async with sessionmaker() as session:
        rows = await session.execute(
            select(MessageEvent.status, MessageEvent.source)
            .where(MessageEvent.message_id == message_id)
            .order_by(MessageEvent.id)
        )
        return [(row[0], row[1]) for row in rows]


async def event_rows(
    sessionmaker: async_sessionmaker[AsyncSession], message_id: uuid.UUID
) -> list[MessageEvent]:
    async with sessionmaker() as session:
        rows = await session.execute(
            select(MessageEvent)
            .where(MessageEvent.message_id == message_id)
            .order_by(MessageEvent.id)
        )
        return list(rows.scalars())


async def is_suppressed(
    sessionmaker: async_sessionmaker[AsyncSession], cipher: PhoneCipher, number: str
) -> bool:
    async with sessionmaker() as session:
        found = await session.get(Suppression, cipher.blind_index(number))
        return found is not None


async def consents(
    sessionmaker: async_sessionmaker[AsyncSession], cipher: PhoneCipher, number: str
) -> list[ConsentEvent]:
    async with sessionmaker() as session:
        rows = await session.execute(
            select(ConsentEvent)
            .where(ConsentEvent.phone_index == cipher.blind_index(number))
            .order_by(ConsentEvent.id)
        )
        return list(rows.scalars())


def twilio_signature(
    auth_token: str, url: str, params: Mapping[str, str] | Iterable[tuple[str, str]]
) -> str:
    """Twilio's algorithm written out independently of app.twilio.signature: the URL, then each
    name and value in code-point order; HMAC-SHA1, base64."""
    pairs = sorted(set(params.items() if isinstance(params, Mapping) else params))
    payload = url + "".join(name + value for name, value in pairs)
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signed(settings: Settings, path: str, params: Mapping[str, str]) -> dict[str, str]:
    """The header Twilio sends for a form POST to PUBLIC_BASE_URL + path."""
    url = settings.public_base + path
    return {"X-Twilio-Signature": twilio_signature(settings.twilio.auth_token, url, params)}
