"""Phone numbers at rest: AES-GCM with versioned keys, and a keyed blind index for look-ups."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.crypto import DecryptionError, PhoneCipher

K1 = bytes(range(32))
K2 = bytes(range(100, 132))
INDEX_KEY = b"blind-index-key-for-tests"
NUMBER = "+14155552671"
NONCE_BYTES = 12
TAG_BYTES = 16


@pytest.fixture
def cipher() -> PhoneCipher:
    return PhoneCipher({1: K1}, INDEX_KEY)


def test_round_trip(cipher: PhoneCipher) -> None:
    ciphertext = cipher.encrypt(NUMBER)

    assert cipher.decrypt(ciphertext) == NUMBER
    assert len(ciphertext) == 1 + NONCE_BYTES + len(NUMBER) + TAG_BYTES


def test_each_encryption_differs_but_the_blind_index_is_equal(cipher: PhoneCipher) -> None:
    first, second = cipher.encrypt(NUMBER), cipher.encrypt(NUMBER)

    assert first != second
    assert first[1 : 1 + NONCE_BYTES] != second[1 : 1 + NONCE_BYTES]
    assert cipher.decrypt(first) == cipher.decrypt(second) == NUMBER
    assert cipher.blind_index(NUMBER) == cipher.blind_index(NUMBER)
    assert len(cipher.blind_index(NUMBER)) == 32


def test_the_blind_index_tells_numbers_apart(cipher: PhoneCipher) -> None:
    assert cipher.blind_index("+14155552671") != cipher.blind_index("+14155552672")


def test_the_blind_index_depends_on_the_index_key_only(cipher: PhoneCipher) -> None:
    other_index_key = PhoneCipher({1: K1}, b"another-blind-index-key")
    other_encryption_key = PhoneCipher({1: K2}, INDEX_KEY)

    assert cipher.blind_index(NUMBER) != other_index_key.blind_index(NUMBER)
    assert cipher.blind_index(NUMBER) == other_encryption_key.blind_index(NUMBER)
    assert NUMBER.encode() not in cipher.blind_index(NUMBER)


def test_new_ciphertexts_use_the_newest_key_and_old_ones_still_decrypt(
    cipher: PhoneCipher,
) -> None:
    old = cipher.encrypt(NUMBER)
    rotated = PhoneCipher({2: K2, 1: K1}, INDEX_KEY)

    new = rotated.encrypt(NUMBER)

    assert (cipher.current_version, rotated.current_version) == (1, 2)
    assert old[0] == 1
    assert new[0] == 2
    assert rotated.decrypt(old) == NUMBER
    assert rotated.decrypt(new) == NUMBER


def test_a_cipher_without_the_key_version_refuses_to_decrypt(cipher: PhoneCipher) -> None:
    newer = PhoneCipher({1: K1, 2: K2}, INDEX_KEY).encrypt(NUMBER)

    with pytest.raises(DecryptionError, match="version 2"):
        cipher.decrypt(newer)


def test_the_wrong_key_under_the_right_version_does_not_authenticate(
    cipher: PhoneCipher,
) -> None:
    impostor = PhoneCipher({1: K2}, INDEX_KEY)

    with pytest.raises(DecryptionError):
        impostor.decrypt(cipher.encrypt(NUMBER))


@pytest.mark.parametrize("position", [1, 5, NONCE_BYTES, 1 + NONCE_BYTES, -TAG_BYTES - 1, -1])
def test_a_flipped_byte_does_not_authenticate(cipher: PhoneCipher, position: int) -> None:
    ciphertext = bytearray(cipher.encrypt(NUMBER))
    ciphertext[position] ^= 0x01

    with pytest.raises(DecryptionError):
        cipher.decrypt(bytes(ciphertext))


def test_a_flipped_version_byte_names_a_missing_key(cipher: PhoneCipher) -> None:
    ciphertext = bytearray(cipher.encrypt(NUMBER))
    ciphertext[0] ^= 0x01

    with pytest.raises(DecryptionError, match="no key with version 0"):
        cipher.decrypt(bytes(ciphertext))


def test_a_ciphertext_with_a_cut_tag_does_not_authenticate(cipher: PhoneCipher) -> None:
    ciphertext = cipher.encrypt(NUMBER)

    with pytest.raises(DecryptionError):
        cipher.decrypt(ciphertext[:-1])


@pytest.mark.parametrize(
    "ciphertext", [b"", b"\x01", b"\x01abc"], ids=["empty", "version-only", "short-nonce"]
)
def test_a_truncated_ciphertext_raises_decryption_error(
    cipher: PhoneCipher, ciphertext: bytes
) -> None:
    with pytest.raises(DecryptionError):
        cipher.decrypt(ciphertext)


def test_a_ciphertext_is_bound_to_its_purpose() -> None:
    # The same key and nonce without the associated data: the tag must not match.
    nonce = bytes(NONCE_BYTES)
    foreign = b"\x01" + nonce + AESGCM(K1).encrypt(nonce, NUMBER.encode(), None)

    with pytest.raises(DecryptionError):
        PhoneCipher({1: K1}, INDEX_KEY).decrypt(foreign)


def test_the_ciphertext_does_not_contain_the_number(cipher: PhoneCipher) -> None:
    ciphertext = cipher.encrypt(NUMBER)

    assert NUMBER.encode() not in ciphertext
    assert NUMBER[1:].encode() not in ciphertext
    assert NUMBER[-7:].encode() not in ciphertext


def test_a_cipher_needs_at_least_one_key() -> None:
    with pytest.raises(ValueError, match="at least one"):
        PhoneCipher({}, INDEX_KEY)


@settings(deadline=None, max_examples=100)
@given(st.text(max_size=200))
def test_any_text_round_trips(text: str) -> None:
    cipher = PhoneCipher({3: K1, 7: K2}, INDEX_KEY)

    ciphertext = cipher.encrypt(text)

    assert ciphertext[0] == 7
    assert cipher.decrypt(ciphertext) == text
    assert PhoneCipher({7: K2}, b"other").decrypt(ciphertext) == text
    assert cipher.blind_index(text) == PhoneCipher({1: K1}, INDEX_KEY).blind_index(text)
