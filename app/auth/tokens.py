"""End-user JWTs from the platform's identity provider: HS256 (shared secret) or RS256."""

from __future__ import annotations

import re
from typing import Any

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from app.auth.exceptions import InvalidToken
from app.auth.principal import Principal, Scope
from app.core.settings import Settings
from app.core.types import USER_ID_MAX_LENGTH, USER_ID_PATTERN

_USER_ID = re.compile(USER_ID_PATTERN)


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        # Each algorithm gets its own key, so an HS256 token signed with the public key
        # (algorithm confusion) can never verify.
        self._keys: dict[str, Any] = {}
        if settings.jwt_secret is not None:
            self._keys["HS256"] = settings.jwt_secret.get_secret_value()
        if settings.jwt_public_key:
            # Loaded once, here: a bad key stops the service at startup, not each request.
            try:
                self._keys["RS256"] = load_pem_public_key(settings.jwt_public_key.encode())
            except ValueError as error:
                raise ValueError(f"JWT_PUBLIC_KEY is not a PEM public key: {error}") from error
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._admin_claim = settings.jwt_admin_claim
        self._leeway = settings.jwt_leeway_seconds

    def verify(self, token: str) -> Principal:
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError as error:
            raise InvalidToken("the bearer token is neither an API key nor a JWT") from error
        key = self._keys.get(str(algorithm))
        if key is None:
            raise InvalidToken(f"tokens signed with {algorithm} are not accepted")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[str(algorithm)],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError as error:
            raise InvalidToken("the token has expired", code="token_expired") from error
        except jwt.InvalidTokenError as error:
            raise InvalidToken(f"the token is not valid: {error}") from error
        subject = claims["sub"]
        if (
            not isinstance(subject, str)
            or len(subject) > USER_ID_MAX_LENGTH
            or not _USER_ID.match(subject)
        ):
            raise InvalidToken(
                f"`sub` must be 1-{USER_ID_MAX_LENGTH} printable characters without spaces"
            )
        scopes = frozenset({Scope.ADMIN}) if self._is_admin(claims) else frozenset()
        return Principal(kind="user", id=subject, name=subject, scopes=scopes)

    def _is_admin(self, claims: dict[str, Any]) -> bool:
        value = claims.get(self._admin_claim)
        if value is True:
            return True
        if isinstance(value, str):
            return value == "admin"
        return isinstance(value, list) and "admin" in value
