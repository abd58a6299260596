"""The service's one configuration object, read from the environment (and `.env`)."""

from __future__ import annotations

import base64
import binascii
from functools import cached_property
from typing import Literal

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Published development keys: fine on a laptop, refused when APP_ENV=production.
DEV_PHONE_ENCRYPTION_KEYS = "1:ZGV2LW9ubHktcGhvbmUtZW5jcnlwdGlvbi1rZXktMDE="
DEV_PHONE_BLIND_INDEX_KEY = "dev-only-blind-index-key-not-for-production"
DEV_JWT_SECRET = "dev-only-jwt-secret-not-for-production"  # noqa: S105
_MIN_SECRET_BYTES = 32
_PLACEHOLDERS = {DEV_PHONE_ENCRYPTION_KEYS, DEV_PHONE_BLIND_INDEX_KEY, DEV_JWT_SECRET, "change-me"}


class Settings(BaseSettings):
    # `.data/local.env` is written by `make run` so the CLI finds the embedded servers; the
    # environment and `.env` win over it.
    model_config = SettingsConfigDict(
        env_file=(".data/local.env", ".env"), extra="ignore", frozen=True
    )

    app_env: Literal["development", "test", "production"] = "development"
    log_level: str = "INFO"

    # Unset means "start the embedded servers" for `make run`; the app itself needs both.
    database_url: str | None = None
    database_pool_size: int = Field(default=10, ge=1)
    database_max_overflow: int = Field(default=10, ge=0)
    redis_url: str | None = None

    # Twilio signs callbacks over the URL it called, which is this one behind a proxy.
    public_base_url: AnyHttpUrl = AnyHttpUrl("http://localhost:8000")
    max_request_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)

    jwt_secret: SecretStr | None = SecretStr(DEV_JWT_SECRET)
    jwt_public_key: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_admin_claim: str = "admin"
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)

    # "version:base64(32 bytes)" pairs, comma separated; new numbers use the newest version.
    phone_encryption_keys: SecretStr = SecretStr(DEV_PHONE_ENCRYPTION_KEYS)
    phone_blind_index_key: SecretStr = SecretStr(DEV_PHONE_BLIND_INDEX_KEY)
    default_phone_region: str = Field(default="US", pattern=r"^[A-Z]{2}$")

    local_data_dir: str = ".data"

    @field_validator("jwt_secret", "jwt_public_key", "jwt_audience", "jwt_issuer", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("database_url")
    @classmethod
    def _use_asyncpg(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                return "postgresql+asyncpg://" + value.removeprefix(prefix)
        return value

    @model_validator(mode="after")
    def _no_placeholder_secrets_in_production(self) -> Settings:
        if self.app_env != "production":
            return self
        secrets = [self.phone_encryption_keys, self.phone_blind_index_key]
        if self.jwt_secret is not None:
            secrets.append(self.jwt_secret)
        dev_key = base64.b64decode(DEV_PHONE_ENCRYPTION_KEYS.partition(":")[2])
        if dev_key in self.phone_keys.values() or any(
            secret.get_secret_value().strip() in _PLACEHOLDERS for secret in secrets
        ):
            raise ValueError(
                "placeholder secrets are refused in production: set PHONE_ENCRYPTION_KEYS, "
                "PHONE_BLIND_INDEX_KEY and JWT_SECRET (or JWT_PUBLIC_KEY with JWT_SECRET empty)"
            )
        # Short HMAC keys can be brute-forced: the blind index would give numbers away,
        # a JWT secret would let anyone sign tokens.
        for name, secret in (
            ("PHONE_BLIND_INDEX_KEY", self.phone_blind_index_key),
            ("JWT_SECRET", self.jwt_secret),
        ):
            if secret is not None and len(secret.get_secret_value().encode()) < _MIN_SECRET_BYTES:
                raise ValueError(f"{name} needs at least {_MIN_SECRET_BYTES} bytes in production")
        return self

    @model_validator(mode="after")
    def _keys_parse(self) -> Settings:
        _ = self.phone_keys
        return self

    @cached_property
    def phone_keys(self) -> dict[int, bytes]:
        keys: dict[int, bytes] = {}
        for pair in self.phone_encryption_keys.get_secret_value().split(","):
            version, _, encoded = pair.strip().partition(":")
            try:
                key = base64.b64decode(encoded, validate=True)
                number = int(version)
            except (ValueError, binascii.Error) as error:
                raise ValueError("PHONE_ENCRYPTION_KEYS: expected version:base64 pairs") from error
            if len(key) != 32 or not 0 < number < 256:
                raise ValueError("PHONE_ENCRYPTION_KEYS: keys are 32 bytes, versions 1-255")
            keys[number] = key
        return keys

    @property
    def public_base(self) -> str:
        return str(self.public_base_url).rstrip("/")
