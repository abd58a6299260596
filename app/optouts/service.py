"""STOP, START and HELP: the suppression list and the consent history behind them."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession

from app.optouts import repository

# Single-word keywords, case-insensitive (twilio/FACTS.md).
OPT_OUT_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
OPT_IN_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})


class Keyword(StrEnum):
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"


# Twilio's Advanced Opt-Out names the kind of keyword it matched (its own list, custom and
# localised keywords included) in `OptOutType`.
_OPT_OUT_TYPES = {"STOP": Keyword.OPT_OUT, "START": Keyword.OPT_IN, "HELP": Keyword.HELP}
_KEYWORD_LENGTH = 32  # consent_events.keyword


def keyword_of(body: str, opt_out_type: str | None = None) -> tuple[Keyword, str] | None:
    """The keyword an inbound message is, with the word as received (upper case); Twilio's
    `OptOutType`, when present, is trusted over our own list."""
    word = body.strip().upper()
    twilio_kind = _OPT_OUT_TYPES.get((opt_out_type or "").strip().upper())
    if twilio_kind is not None:
        return twilio_kind, word[:_KEYWORD_LENGTH]
    if word in OPT_OUT_KEYWORDS:
        return Keyword.OPT_OUT, word
    if word in OPT_IN_KEYWORDS:
        return Keyword.OPT_IN, word
    if word in HELP_KEYWORDS:
        return Keyword.HELP, word
    return None


async def is_opted_out(session: AsyncSession, phone_index: bytes) -> bool:
    return await repository.is_suppressed(session, phone_index)


async def opted_out_among(session: AsyncSession, phone_indexes: Sequence[bytes]) -> set[bytes]:
    """The numbers (blind indexes) among these that replied STOP."""
    return await repository.suppressed_among(session, phone_indexes)


async def opt_out(
    session: AsyncSession,
    phone_index: bytes,
    *,
    source: str,
    keyword: str | None = None,
    message_sid: str | None = None,
) -> bool:
    """Stops everything to the number; True if it was not stopped already. Every STOP is
    recorded, even a repeated one: the history is the evidence."""
    added = await repository.suppress(session, phone_index, reason=keyword or source)
    await repository.record_consent(
        session,
        phone_index,
        kind=Keyword.OPT_OUT,
        source=source,
        keyword=keyword,
        message_sid=message_sid,
    )
    return added


async def opt_in(
    session: AsyncSession, phone_index: bytes, *, source: str, keyword: str, message_sid: str | None
) -> bool:
    removed = await repository.unsuppress(session, phone_index)
    await repository.record_consent(
        session,
        phone_index,
        kind=Keyword.OPT_IN,
        source=source,
        keyword=keyword,
        message_sid=message_sid,
    )
    return removed


async def record_help(
    session: AsyncSession, phone_index: bytes, *, keyword: str, message_sid: str | None
) -> None:
    await repository.record_consent(
        session,
        phone_index,
        kind=Keyword.HELP,
        source="inbound_sms",
        keyword=keyword,
        message_sid=message_sid,
    )
