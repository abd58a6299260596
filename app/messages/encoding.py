"""SMS encoding and segment counting, as carriers count them (twilio/FACTS.md, "Segments").

GSM-7: 160 units in one segment, 153 per segment when split; extension-table characters take
two units and never straddle a segment boundary. Anything outside GSM-7 makes the whole
message UCS-2: 70 units, 67 per segment, where a character outside the BMP (most emoji) is a
surrogate pair of two units that is never split either."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

MAX_BODY_CHARACTERS = 1600

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

# Typographic look-alikes that would force UCS-2, and their GSM-7 stand-ins (what Twilio's
# Smart Encoding does).
SMART_REPLACEMENTS = {
    "\u2018": "'",  # ‘
    "\u2019": "'",  # ’
    "\u201a": "'",  # ‚
    "\u201b": "'",  # ‛
    "\u2032": "'",  # ′
    "\u02bc": "'",  # ʼ
    "\u201c": '"',  # “
    "\u201d": '"',  # ”
    "\u201e": '"',  # „
    "\u201f": '"',  # ‟
    "\u2033": '"',  # ″
    "\u00ab": '"',  # «
    "\u00bb": '"',  # »
    "\u2010": "-",  # ‐
    "\u2011": "-",  # ‑
    "\u2012": "-",  # ‒
    "\u2013": "-",  # –
    "\u2014": "-",  # —
    "\u2015": "-",  # ―
    "\u2212": "-",  # −
    "\u2026": "...",  # …
    "\u00a0": " ",  # no-break space
    "\u2002": " ",
    "\u2003": " ",
    "\u2009": " ",
    "\u200a": " ",
    "\u202f": " ",
    "\u200b": "",  # zero-width space
    "\u2022": "-",  # •
    "\u00b7": "-",  # ·
    "\u02c6": "^",  # ˆ
    "\u02dc": "~",  # ˜
    "\u2039": "<",  # ‹
    "\u203a": ">",  # ›
    "\u00d7": "x",  # ×
    "\u00f7": "/",  # ÷
}


class Encoding(StrEnum):
    GSM7 = "GSM-7"
    UCS2 = "UCS-2"


@dataclass(frozen=True, slots=True)
class BodyShape:
    encoding: Encoding
    segments: int
    units: int
    """GSM-7 septets or UCS-2 code units the body takes."""


def smart_encode(body: str) -> str:
    """Replaces look-alikes with GSM-7 characters, so a message is not needlessly UCS-2."""
    if all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in body):
        return body
    return "".join(SMART_REPLACEMENTS.get(char, char) for char in body)


def is_gsm7(body: str) -> bool:
    return all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in body)


def shape(body: str) -> BodyShape:
    """The encoding a carrier will use and the segments the message will be billed as."""
    if is_gsm7(body):
        widths = [2 if char in GSM7_EXTENSION else 1 for char in body]
        return BodyShape(Encoding.GSM7, _segments(widths, single=160, split=153), sum(widths))
    widths = [2 if ord(char) > 0xFFFF else 1 for char in body]
    return BodyShape(Encoding.UCS2, _segments(widths, single=70, split=67), sum(widths))


def _segments(widths: list[int], *, single: int, split: int) -> int:
    total = sum(widths)
    if total == 0:
        return 0
    if total <= single:
        return 1
    segments, used = 1, 0
    for width in widths:  # a two-unit character never straddles two segments
        if used + width > split:
            segments, used = segments + 1, 0
        used += width
    return segments
