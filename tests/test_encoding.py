# ruff: noqa: RUF001
"""SMS encoding and segment counting (app/messages/encoding.py, twilio/FACTS.md "Segments").

The expected values come from an independent reference written here: the GSM 03.38 tables
typed out position by position, UCS-2 widths taken from Python's UTF-16 encoder, and segments
packed greedily so that a two-unit character (GSM-7 extension, UCS-2 surrogate pair) never
straddles a segment boundary."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.messages.encoding import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    SMART_REPLACEMENTS,
    BodyShape,
    Encoding,
    is_gsm7,
    shape,
    smart_encode,
)

PROPERTIES = settings(max_examples=200, deadline=None)

# --- reference -------------------------------------------------------------------------------

# GSM 03.38 default alphabet, row by row (0x00-0x7F); None is 0x1B, the escape to the extension.
_GSM_BASIC_TABLE: tuple[str | None, ...] = (
    *"@£$¥èéùìòÇ\nØø\rÅå",
    *"Δ_ΦΓΛΩΠΨΣΘΞ",
    None,
    *"ÆæßÉ",
    *" !\"#¤%&'()*+,-./",
    *"0123456789:;<=>?",
    *"¡ABCDEFGHIJKLMNO",
    *"PQRSTUVWXYZÄÖÑÜ§",
    *"¿abcdefghijklmno",
    *"pqrstuvwxyzäöñüà",
)
REF_BASIC = frozenset(char for char in _GSM_BASIC_TABLE if char is not None)
# GSM 03.38 extension table (after 0x1B): 0x0A form feed, 0x14 ^, 0x28 {, 0x29 }, 0x2F \,
# 0x3C [, 0x3D ~, 0x3E ], 0x40 |, 0x65 €.
REF_EXTENSION = frozenset(["\f", "^", "{", "}", "\\", "[", "~", "]", "|", "\u20ac"])

GSM_SINGLE, GSM_SPLIT = 160, 153
UCS2_SINGLE, UCS2_SPLIT = 70, 67


def ref_is_gsm7(body: str) -> bool:
    return all(char in REF_BASIC or char in REF_EXTENSION for char in body)


def ref_widths(body: str) -> list[int]:
    if ref_is_gsm7(body):
        return [2 if char in REF_EXTENSION else 1 for char in body]
    return [len(char.encode("utf-16-le")) // 2 for char in body]


def ref_segments(body: str) -> int:
    """Greedy packing: fill a segment until the next character does not fit whole."""
    widths = ref_widths(body)
    single, split = (GSM_SINGLE, GSM_SPLIT) if ref_is_gsm7(body) else (UCS2_SINGLE, UCS2_SPLIT)
    total = sum(widths)
    if total == 0:
        return 0
    if total <= single:
        return 1
    segments: list[int] = [0]
    for width in widths:
        if segments[-1] + width > split:
            segments.append(0)
        segments[-1] += width
    assert all(0 < used <= split for used in segments)
    return len(segments)


def ref_shape(body: str) -> BodyShape:
    encoding = Encoding.GSM7 if ref_is_gsm7(body) else Encoding.UCS2
    return BodyShape(encoding, ref_segments(body), sum(ref_widths(body)))


# --- strategies ------------------------------------------------------------------------------

BASIC_CHARS = sorted(REF_BASIC)
EXTENSION_CHARS = sorted(REF_EXTENSION)
BMP_NON_GSM = ["ç", "ł", "中", "Ж", "я", "ñ\u0303", "`", "\t", "Α", "ő", "\u200b", "\u2019"]
ASTRAL = ["😀", "👍", "🎉", "𝄞", "𠀀"]
NO_REPLACEMENT = ["ł", "中", "Ж", "😀", "ç", "Ω\u0301"]

basic_char = st.sampled_from(BASIC_CHARS)
extension_char = st.sampled_from(EXTENSION_CHARS)
bmp_non_gsm_char = st.sampled_from([c for c in "".join(BMP_NON_GSM) if c not in REF_BASIC])
astral_char = st.sampled_from(ASTRAL)
replaceable_char = st.sampled_from(sorted(SMART_REPLACEMENTS))

gsm_text = st.text(alphabet=st.one_of(basic_char, extension_char), max_size=300)
mixed_text = st.text(
    alphabet=st.one_of(basic_char, extension_char, bmp_non_gsm_char, astral_char), max_size=300
)
# Mostly GSM-7 with the occasional other character: lands near both sets of boundaries.
mostly_gsm_text = st.text(
    alphabet=st.one_of(
        basic_char, basic_char, basic_char, extension_char, bmp_non_gsm_char, astral_char
    ),
    max_size=300,
)
body_char = st.one_of(basic_char, extension_char, bmp_non_gsm_char, astral_char)


def _join_runs(runs: list[tuple[str, int]]) -> str:
    return "".join(char * count for char, count in runs)


def runs_of(chars: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Short random texts rarely pass 160 units; runs of one character (up to 160 each, among
    short random texts) reach several segments and put two-unit characters on every boundary."""
    text = st.text(alphabet=chars, max_size=5)
    run = st.one_of(st.tuples(chars, st.integers(1, 160)), st.tuples(text, st.just(1)))
    return st.lists(run, max_size=5).map(_join_runs)


gsm_runs = runs_of(st.one_of(basic_char, extension_char))
mixed_runs = runs_of(body_char)
any_body = st.one_of(gsm_text, mixed_text, mostly_gsm_text, gsm_runs, mixed_runs)
any_char = st.one_of(body_char, replaceable_char)
smartable_text = st.text(
    alphabet=st.one_of(basic_char, extension_char, replaceable_char), max_size=300
)
smart_mixed_text = st.text(
    alphabet=st.one_of(basic_char, extension_char, replaceable_char, bmp_non_gsm_char, astral_char),
    max_size=300,
)


# --- the tables ------------------------------------------------------------------------------


def test_reference_table_is_complete() -> None:
    assert len(_GSM_BASIC_TABLE) == 128
    assert len(REF_BASIC) == 127
    assert not REF_BASIC & REF_EXTENSION


def test_basic_table_matches_gsm_03_38() -> None:
    assert frozenset(GSM7_BASIC) == REF_BASIC


def test_extension_table_matches_gsm_03_38() -> None:
    assert frozenset(GSM7_EXTENSION) == REF_EXTENSION


# --- is_gsm7 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "",
        "Hello, world!",
        "Your code is 123456.\r\n",
        "Ça coute 5 €",  # Ç is in the basic table, € in the extension
        "ΔΦΓΛΩΠΨΣΘΞ",
        "@£$¥èéùìò_!¡¿§¤",
        "^{}\\[~]|€\f",
        "".join(BASIC_CHARS),
    ],
)
def test_is_gsm7_true(body: str) -> None:
    assert is_gsm7(body)


@pytest.mark.parametrize(
    "body",
    [
        "ç",  # GSM 03.38 has only the capital Ç
        "ł",
        "中文",
        "Привет",
        "😀",
        "`",  # grave accent / backtick is not in GSM-7
        "\t",
        "Α",  # Greek capital alpha, not Latin A
        "it\u2019s",  # typographic apostrophe
        "no\u00a0break",
        "hello 中",
    ],
)
def test_is_gsm7_false(body: str) -> None:
    assert not is_gsm7(body)


# --- GSM-7 segments --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "segments"),
    [
        (1, 1),
        (159, 1),
        (160, 1),
        (161, 2),
        (200, 2),
        (305, 2),
        (306, 2),
        (307, 3),
        (459, 3),
        (460, 4),
        (1600, 11),
    ],
)
def test_gsm7_segments_by_length(length: int, segments: int) -> None:
    result = shape("a" * length)
    assert result == BodyShape(Encoding.GSM7, segments, length)


def test_empty_body_is_zero_segments() -> None:
    assert shape("") == BodyShape(Encoding.GSM7, 0, 0)


@pytest.mark.parametrize("char", EXTENSION_CHARS)
def test_extension_characters_count_two_units(char: str) -> None:
    result = shape(char)
    assert result == BodyShape(Encoding.GSM7, 1, 2)


def test_80_euros_fit_one_segment() -> None:
    assert shape("€" * 80) == BodyShape(Encoding.GSM7, 1, 160)


def test_81_euros_take_two_segments() -> None:
    assert shape("€" * 81) == BodyShape(Encoding.GSM7, 2, 162)


def test_159_units_plus_extension_character_splits() -> None:
    assert shape("a" * 159 + "€") == BodyShape(Encoding.GSM7, 2, 161)


def test_extension_character_does_not_straddle_segment_boundary() -> None:
    # 152 + 2 + 152 = 306 units: two segments by arithmetic, but the € cannot take the 153rd
    # septet of segment one, so segment two is € + 151 'a' = 153 and the last 'a' spills over.
    body = "a" * 152 + "€" + "a" * 152
    assert shape(body) == BodyShape(Encoding.GSM7, 3, 306)
    assert ref_segments(body) == 3
    assert math.ceil(306 / GSM_SPLIT) == 2


def test_extension_character_exactly_filling_a_segment() -> None:
    # 151 + 2 = 153: the € ends segment one exactly; 153 more 'a' make segment two.
    body = "a" * 151 + "€" + "a" * 153
    assert shape(body) == BodyShape(Encoding.GSM7, 2, 306)


@pytest.mark.parametrize("tail", [0, 1, 10, 150, 151, 152, 153, 200])
def test_extension_character_at_boundary_matches_reference(tail: int) -> None:
    body = "a" * 152 + "€" + "b" * tail
    assert shape(body) == ref_shape(body)


def test_many_extension_characters_split_76_per_segment() -> None:
    # 153 is odd: each split segment holds 76 € (152 septets) and one septet goes unused.
    assert shape("€" * 152).segments == 2
    assert shape("€" * 153).segments == 3


# --- UCS-2 segments --------------------------------------------------------------------------


@pytest.mark.parametrize("char", ["ł", "中", "Ж", "ç", "`"])
@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4), (1600, 24)],
)
def test_ucs2_segments_by_length(char: str, length: int, segments: int) -> None:
    assert shape(char * length) == BodyShape(Encoding.UCS2, segments, length)


def test_one_non_gsm_character_makes_whole_message_ucs2() -> None:
    body = "a" * 69 + "ł"
    assert shape(body) == BodyShape(Encoding.UCS2, 1, 70)
    body = "a" * 70 + "ł"
    assert shape(body) == BodyShape(Encoding.UCS2, 2, 71)


def test_extension_characters_are_one_unit_in_ucs2() -> None:
    assert shape("€" * 69 + "ł") == BodyShape(Encoding.UCS2, 1, 70)


def test_cyrillic_message() -> None:
    assert shape("Привет, мир!") == BodyShape(Encoding.UCS2, 1, 12)


def test_emoji_takes_two_units() -> None:
    assert shape("😀") == BodyShape(Encoding.UCS2, 1, 2)
    assert shape("a😀") == BodyShape(Encoding.UCS2, 1, 3)


def test_35_emoji_fit_one_segment_36_do_not() -> None:
    assert shape("😀" * 35) == BodyShape(Encoding.UCS2, 1, 70)
    assert shape("😀" * 36) == BodyShape(Encoding.UCS2, 2, 72)


def test_emoji_does_not_straddle_segment_boundary() -> None:
    # 66 + 2 + 66 = 134 units: two segments by arithmetic, but the surrogate pair cannot be
    # split over units 67 and 68, so segment two is 😀 + 65 'ł' = 67 and one 'ł' spills over.
    body = "ł" * 66 + "😀" + "ł" * 66
    assert shape(body) == BodyShape(Encoding.UCS2, 3, 134)
    assert math.ceil(134 / UCS2_SPLIT) == 2


def test_emoji_split_33_per_segment() -> None:
    # 67 is odd: each split segment holds 33 emoji (66 units).
    assert shape("😀" * 66).segments == 2
    assert shape("😀" * 67).segments == 3


@pytest.mark.parametrize("tail", [0, 1, 2, 65, 66, 67, 100])
def test_emoji_at_boundary_matches_reference(tail: int) -> None:
    body = "ł" * 66 + "😀" + "x" * tail
    assert shape(body) == ref_shape(body)


# --- smart encoding --------------------------------------------------------------------------


def test_smart_encode_typographic_characters() -> None:
    body = "\u2019\u2018\u201c\u201d\u2013\u2014\u2026\u00ab\u00bb\u00a0"
    assert smart_encode(body) == '\'\'""--..."" '
    assert is_gsm7(smart_encode(body))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("It\u2019s \u201cfine\u201d \u2014 really\u2026", 'It\'s "fine" - really...'),
        ("\u00abBonjour\u00bb", '"Bonjour"'),
        ("10\u00a0000", "10 000"),
        ("2\u20133 days", "2-3 days"),
        ("\u2018quoted\u2019", "'quoted'"),
    ],
)
def test_smart_encode_examples(body: str, expected: str) -> None:
    assert not is_gsm7(body)
    assert smart_encode(body) == expected
    assert shape(smart_encode(body)).encoding is Encoding.GSM7


@pytest.mark.parametrize(
    "body", ["", "Hello, world!", "Your code: 123456", "^{}\\[~]|€\f", "".join(BASIC_CHARS)]
)
def test_smart_encode_leaves_gsm7_unchanged(body: str) -> None:
    assert smart_encode(body) == body


def test_smart_encode_saves_segments() -> None:
    body = "It\u2019s " + "a" * 100  # 105 characters: 2 UCS-2 segments, 1 GSM-7 segment
    assert shape(body) == BodyShape(Encoding.UCS2, 2, 105)
    assert shape(smart_encode(body)) == BodyShape(Encoding.GSM7, 1, 105)


@pytest.mark.parametrize("other", NO_REPLACEMENT)
def test_characters_without_replacement_stay_ucs2(other: str) -> None:
    body = "It\u2019s " + other
    encoded = smart_encode(body)
    assert other in encoded
    assert not is_gsm7(encoded)
    assert shape(encoded).encoding is Encoding.UCS2


def test_replacements_are_gsm7_and_keys_are_not() -> None:
    for char, replacement in SMART_REPLACEMENTS.items():
        assert len(char) == 1
        assert not ref_is_gsm7(char), char
        assert ref_is_gsm7(replacement), (char, replacement)


# --- properties ------------------------------------------------------------------------------


@PROPERTIES
@given(any_body)
def test_segments_match_greedy_reference(body: str) -> None:
    result = shape(body)
    assert result == ref_shape(body)
    assert is_gsm7(body) == ref_is_gsm7(body)
    single, split = (
        (GSM_SINGLE, GSM_SPLIT) if result.encoding is Encoding.GSM7 else (UCS2_SINGLE, UCS2_SPLIT)
    )
    if result.units == 0:
        assert result.segments == 0
    elif result.units <= single:
        assert result.segments == 1
    else:
        # At least the arithmetic lower bound; at most one unit lost per segment to a pair.
        assert math.ceil(result.units / split) <= result.segments
        assert result.segments <= math.ceil(result.units / (split - 1))


@PROPERTIES
@given(any_body, any_char)
def test_segments_monotonic_when_appending(body: str, char: str) -> None:
    assert shape(body + char).segments >= shape(body).segments


@PROPERTIES
@given(any_body)
def test_units_equal_sum_of_widths(body: str) -> None:
    result = shape(body)
    if result.encoding is Encoding.GSM7:
        expected = sum(2 if char in REF_EXTENSION else 1 for char in body)
    else:
        expected = len(body.encode("utf-16-le")) // 2
    assert result.units == expected == sum(ref_widths(body))


@PROPERTIES
@given(gsm_text)
def test_smart_encode_keeps_gsm7_text_unchanged(body: str) -> None:
    encoded = smart_encode(body)
    assert encoded == body
    assert is_gsm7(encoded)


@PROPERTIES
@given(smart_mixed_text)
def test_smart_encode_never_makes_gsm7_text_non_gsm7(body: str) -> None:
    if is_gsm7(body):
        assert is_gsm7(smart_encode(body))


@PROPERTIES
@given(smart_mixed_text)
def test_smart_encode_is_idempotent(body: str) -> None:
    once = smart_encode(body)
    assert smart_encode(once) == once


@PROPERTIES
@given(smartable_text)
def test_smart_encode_makes_replaceable_text_gsm7(body: str) -> None:
    assert is_gsm7(smart_encode(body))


@PROPERTIES
@given(smart_mixed_text)
def test_smart_encode_only_touches_replaceable_characters(body: str) -> None:
    expected = "".join(SMART_REPLACEMENTS.get(char, char) for char in body)
    assert smart_encode(body) == expected
    leftover = [char for char in body if not ref_is_gsm7(char) and char not in SMART_REPLACEMENTS]
    assert is_gsm7(smart_encode(body)) == (not leftover)
