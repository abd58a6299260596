"""One-time codes: requested through the API, made when their message is sent, checked once.

The code exists in clear only in the worker that sends it; the database keeps a keyed hash
bound to the verification, the message body is never stored, and nothing logs it. A request
answers the same whether or not the user or the number exists, and every request is counted
against limits per IP, user, number, number prefix and country, shared through Redis."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.codes import repository
from app.codes.exceptions import RateLimited
from app.codes.metrics import CODES_SENT, CODES_VERIFIED
from app.codes.models import Verification
from app.codes.schemas import CodeSent
from app.core.crypto import PhoneCipher
from app.core.rate_limit import Limit, RateLimiter
from app.core.settings import Settings
from app.messages import service as messages
from app.messages.service import templates_dir
from app.notifications.localisation import recipient_locale_and_zone
from app.notifications.rendering import render
from app.optouts import service as optouts
from app.users import service as users
from app.users.models import User

_CODE_IN_BODY = re.compile(r"(?<!\d)(\d{6})(?!\d)")
_FILLER_CODE = "000000"


class Purpose(StrEnum):
    TWO_FACTOR = "two_factor"
    PHONE_VERIFICATION = "phone_verification"


class CodeHasher:
    """HMAC-SHA256 keyed by a key derived from PHONE_BLIND_INDEX_KEY and bound to one
    verification: a leaked table gives neither the codes nor a way to test them offline."""

    def __init__(self, settings: Settings) -> None:
        root = settings.phone_blind_index_key.get_secret_value().encode()
        self._key = hmac.new(root, b"one-time-codes", hashlib.sha256).digest()

    def hash(self, verification_id: uuid.UUID, code: str) -> bytes:
        message = f"{verification_id}:{code}".encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class CodeRequested:
    answer: CodeSent
    message_id: uuid.UUID | None  # None when nothing was sent (and the caller must not know)


async def request_code(
    session: AsyncSession,
    limiter: RateLimiter,
    cipher: PhoneCipher,
    settings: Settings,
    principal: Principal,
    *,
    subject: str,
    user: User | None,
    purpose: Purpose,
    ip: str | None,
) -> CodeRequested:
    """`subject` is the user id the request names, whether or not such a user exists."""
    answer = CodeSent(
        expires_in_seconds=settings.otp_ttl_seconds,
        resend_after_seconds=settings.otp_resend_cooldown_seconds,
    )
    e164 = cipher.decrypt(user.phone_encrypted) if user and user.phone_encrypted else None
    deliverable = (
        user is not None
        and e164 is not None
        and await _may_receive(session, settings, user, purpose)
    )
    # A request that will send nothing must not use up the limits of the number it names:
    # else a few accounts naming someone's number could lock that person out of their codes.
    counted_number = e164 if deliverable else None
    # A service calls for all its users from one address: the per-IP limit is for end users.
    caller_ip = ip if principal.kind == "user" else None
    verdict = await limiter.hit(
        _limits(settings, cipher, subject, user, counted_number, purpose, caller_ip)
    )
    if not verdict.allowed:
        raise RateLimited(verdict.retry_after_seconds)
    if user is None or e164 is None or not deliverable:
        return CodeRequested(answer, None)
    assert user.phone_index is not None
    verification = await repository.replace(
        session,
        Verification(
            user_id=user.id,
            purpose=purpose,
            phone_index=user.phone_index,
            phone_region=user.phone_region,
            expires_at=datetime.now(UTC) + timedelta(seconds=settings.otp_ttl_seconds),
        ),
    )
    message = await messages.store_code_message(
        session,
        cipher,
        settings,
        principal,
        user,
        e164,
        template_body=code_text(settings, purpose, user, e164, _FILLER_CODE),
    )
    verification.message_id = message.id
    await session.flush()
    CODES_SENT.labels(user.phone_region or "unknown").inc()
    return CodeRequested(answer, message.id)


def _limits(
    settings: Settings,
    cipher: PhoneCipher,
    subject: str,
    user: User | None,
    e164: str | None,
    purpose: Purpose,
    ip: str | None,
) -> list[Limit]:
    """Numbers, prefixes and user ids are keyed by blind index: Redis never holds them in
    clear. A user who does not exist, or has no number, meets the same per-user, per-number
    and cooldown limits (the latter two keyed by the user named): a 429 must not tell them
    apart from a user who has one."""
    limits = []
    if ip:
        limits.append(Limit(f"otp:ip:{ip}", settings.otp_sends_per_ip_per_hour, 3600, "otp_ip"))
    named = cipher.blind_index(f"user:{subject}").hex()
    limits.append(
        Limit(f"otp:user:{named}", settings.otp_sends_per_user_per_hour, 3600, "otp_user")
    )
    target = cipher.blind_index(e164).hex() if e164 is not None else f"user:{named}"
    if settings.otp_resend_cooldown_seconds > 0:  # 0: no cooldown (not a 1 s one)
        limits.append(
            Limit(
                f"otp:cooldown:{purpose}:{target}",
                1,
                settings.otp_resend_cooldown_seconds,
                "otp_cooldown",
            )
        )
    limits.append(
        Limit(
            f"otp:number:{target}",
            settings.otp_sends_per_number_per_10_minutes,
            600,
            "otp_number",
        )
    )
    if e164 is not None:
        prefix = cipher.blind_index(e164[:-3]).hex()
        day = datetime.now(UTC).strftime("%Y%m%d")
        region = user.phone_region if user else None
        limits += [
            Limit(
                f"otp:prefix:{prefix}", settings.otp_sends_per_prefix_per_hour, 3600, "otp_prefix"
            ),
            Limit(
                f"otp:country:{region}:{day}",
                settings.otp_sends_per_country_per_day,
                86400,
                "otp_country",
            ),
        ]
    return limits


async def _may_receive(
    session: AsyncSession, settings: Settings, user: User, purpose: Purpose
) -> bool:
    if purpose is Purpose.TWO_FACTOR and user.phone_verified_at is None:
        return False  # a second factor must be a number the user proved is theirs
    if settings.sms_allowed_countries and user.phone_region not in settings.sms_allowed_countries:
        return False
    assert user.phone_index is not None
    if purpose is Purpose.PHONE_VERIFICATION and await users.verified_elsewhere(
        session, user.phone_index, user.id
    ):
        return False  # someone else proved this number is theirs: no codes to it for others
    return not await optouts.is_opted_out(session, user.phone_index)


class CheckOutcome(StrEnum):
    VERIFIED = "verified"
    INVALID = "invalid"


async def check_code(
    session: AsyncSession,
    settings: Settings,
    *,
    user: User | None,
    purpose: Purpose,
    code: str,
) -> CheckOutcome:
    """Right code, once, within its time, on the number it went to, before the tries run out.
    A wrong try counts even though the answer is an error: the caller commits it."""
    verification = await repository.current(session, user.id, purpose) if user else None
    hasher = CodeHasher(settings)
    # Hashed whatever happens, so a missing user or code takes the same work as a wrong one.
    offered = hasher.hash(verification.id if verification else uuid.UUID(int=0), code)
    now = datetime.now(UTC)
    usable = (
        user is not None
        and verification is not None
        and verification.code_hash is not None
        and verification.consumed_at is None
        and verification.expires_at > now
        and verification.wrong_tries < settings.otp_max_wrong_tries
        and user.phone_index == verification.phone_index
    )
    if not usable or verification is None or verification.code_hash is None:
        return CheckOutcome.INVALID
    if not hmac.compare_digest(offered, verification.code_hash):
        verification.wrong_tries += 1
        await session.flush()
        return CheckOutcome.INVALID
    verification.consumed_at = now
    if purpose is Purpose.PHONE_VERIFICATION and user is not None:
        user.phone_verified_at = now
    await session.flush()
    CODES_VERIFIED.labels(verification.phone_region or "unknown").inc()
    return CheckOutcome.VERIFIED


async def issue_code(
    session: AsyncSession, settings: Settings, cipher: PhoneCipher, message_id: uuid.UUID
) -> str | None:
    """In the worker, just before sending: makes the code, keeps its hash, returns the body.
    None when the code was replaced, used or has expired: then nothing is sent."""
    verification = await repository.for_message(session, message_id)
    now = datetime.now(UTC)
    if verification is None or verification.consumed_at is not None:
        return None
    if verification.expires_at <= now:
        return None
    code = f"{secrets.randbelow(1_000_000):06d}"
    await repository.set_code(
        session,
        verification.id,
        CodeHasher(settings).hash(verification.id, code),
        now + timedelta(seconds=settings.otp_ttl_seconds),
    )
    user = await users.user_by_id(session, verification.user_id)
    e164 = cipher.decrypt(user.phone_encrypted) if user and user.phone_encrypted else None
    return code_text(settings, Purpose(verification.purpose), user, e164, code)


_CODE_EVENTS = {
    Purpose.TWO_FACTOR: "auth.two_factor_code",
    Purpose.PHONE_VERIFICATION: "phone.verification_code",
}


def code_text(
    settings: Settings, purpose: Purpose, user: User | None, e164: str | None, code: str
) -> str:
    """The code's message in the user's language (operators change it with a template
    override, like any notification)."""
    locale, zone = recipient_locale_and_zone(user, e164)
    data = {"code": code, "expires_in_minutes": settings.otp_ttl_seconds // 60}
    return render(_CODE_EVENTS[purpose], data, locale, zone, overrides_dir=templates_dir(settings))


async def is_current_code(
    session: AsyncSession, settings: Settings, message_id: uuid.UUID, body: str | None
) -> bool:
    """Whether a message Twilio holds carries this message's current code (reconciliation
    cannot compare bodies: ours is never stored)."""
    verification = await repository.for_message(session, message_id)
    if verification is None or verification.code_hash is None or not body:
        return False
    hasher = CodeHasher(settings)
    return any(
        hmac.compare_digest(hasher.hash(verification.id, code), verification.code_hash)
        for code in _CODE_IN_BODY.findall(body)
    )
