"""Phone numbers at rest: AES-GCM with versioned keys, plus a keyed blind index for look-ups."""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE_BYTES = 12
_TAG_BYTES = 16
# Binds ciphertexts to their purpose: a phone ciphertext cannot be replayed as another field.
_ASSOCIATED_DATA = b"sms-service:phone:v1"


class DecryptionError(Exception):
    pass


class PhoneCipher:
    """Encrypts E.164 numbers; the first byte of a ciphertext names the key version."""

    def __init__(self, keys: dict[int, bytes], blind_index_key: bytes) -> None:
        if not keys:
            raise ValueError("at least one encryption key is needed")
        self._aeads = {version: AESGCM(key) for version, key in keys.items()}
        self._current = max(keys)
        self._index_key = blind_index_key

    @property
    def current_version(self) -> int:
        return self._current

    def encrypt(self, e164: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aeads[self._current].encrypt(nonce, e164.encode(), _ASSOCIATED_DATA)
        return bytes([self._current]) + nonce + sealed

    def decrypt(self, ciphertext: bytes) -> str:
        if len(ciphertext) < 1 + _NONCE_BYTES + _TAG_BYTES:
            raise DecryptionError("ciphertext is too short")
        version, nonce, sealed = (
            ciphertext[0],
            ciphertext[1 : 1 + _NONCE_BYTES],
            ciphertext[1 + _NONCE_BYTES :],
        )
        aead = self._aeads.get(version)
        if aead is None:
            raise DecryptionError(f"no key with version {version}")
        try:
            return aead.decrypt(nonce, sealed, _ASSOCIATED_DATA).decode()
        except InvalidTag as error:
            raise DecryptionError("ciphertext does not authenticate") from error

    def blind_index(self, e164: str) -> bytes:
        """Deterministic, keyed: equal numbers match without the table holding the number."""
        return hmac.new(self._index_key, e164.encode(), hashlib.sha256).digest()
