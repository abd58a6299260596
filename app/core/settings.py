"""The service's one configuration object, read from the environment (and `.env`)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import time
from decimal import Decimal
from functools import cached_property
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Published development keys: fine on a laptop, refused when APP_ENV=production.
DEV_PHONE_ENCRYPTION_KEYS = "1:ZGV2LW9ubHktcGhvbmUtZW5jcnlwdGlvbi1rZXktMDE="
DEV_PHONE_BLIND_INDEX_KEY = "dev-only-blind-index-key-not-for-production"
DEV_JWT_SECRET = "dev-only-jwt-secret-not-for-production"  # noqa: S105
_MIN_SECRET_BYTES = 32

# The sandbox's fixed account: it stands in for Twilio when TWILIO_ACCOUNT_SID is unset.
SANDBOX_MOUNT_PATH = "/twilio-sandbox"
SANDBOX_ACCOUNT_SID = "AC" + "5a" * 16
SANDBOX_AUTH_TOKEN = "sandbox-auth-token-for-development-only"  # noqa: S105
SANDBOX_FROM_NUMBER = "+15005550006"  # Twilio's magic "valid sender"
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

    # How long a verified API key is trusted without looking it up again: a revoked key
    # still works for up to this long in each API process (0: every request looks it up).
    api_key_cache_seconds: float = Field(default=5.0, ge=0, le=60)

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

    # Twilio. With no account SID the service talks to its own Twilio sandbox, mounted at
    # /twilio-sandbox (development and tests only; production refuses to start without one).
    twilio_account_sid: str | None = Field(default=None, pattern=r"^AC[0-9a-fA-F]{32}$")
    twilio_auth_token: SecretStr | None = None
    # Optional API key (SK…) to authenticate with instead of the auth token.
    twilio_api_key_sid: str | None = Field(default=None, pattern=r"^SK[0-9a-fA-F]{32}$")
    twilio_api_key_secret: SecretStr | None = None
    twilio_from_number: str | None = None
    twilio_messaging_service_sid: str | None = Field(default=None, pattern=r"^MG[0-9a-fA-F]{32}$")
    twilio_base_url: AnyHttpUrl | None = None
    twilio_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # Keep-alive pool: as many connections as requests a process has in flight to Twilio.
    twilio_max_connections: int = Field(default=50, ge=1, le=1000)

    sms_require_verified_phone: bool = True
    # ISO country codes numbers may be in (comma separated); empty means any country.
    sms_allowed_countries: Annotated[list[str], NoDecode] = []
    message_validity_seconds: int = Field(default=36000, ge=60, le=36000)
    # Messages Twilio has not reported final after this long are fetched (backstop poller).
    status_poll_after_seconds: int = Field(default=600, ge=10)
    # Backoff of retries after Twilio refused a message for now (doubling, with jitter).
    send_retry_base_seconds: float = Field(default=2.0, gt=0, le=600)
    send_retry_cap_seconds: float = Field(default=300.0, gt=0, le=3600)
    # After an attempt whose outcome is unknown, how long to keep looking for the message at
    # Twilio (its list can lag its create) before sending it again.
    send_reconcile_window_seconds: float = Field(default=30.0, ge=0, le=3600)
    # Each sender's rate at Twilio (its MPS), in segments per second, shared by every worker
    # (app/outbox/sender_limit.py). 0: no limit of ours (Twilio queues what exceeds its rate).
    sender_segments_per_second: float = Field(default=0, ge=0, le=10_000)
    # Jobs one worker process runs at once (each mostly waits on Twilio).
    worker_max_jobs: int = Field(default=50, ge=1, le=1000)
    # The worker's Prometheus metrics on this port (/metrics); unset: not served.
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # Bulk campaigns (app/campaigns): messages per chunk (one arq job each), a campaign's chunk
    # jobs queued or running at once (the others wait in the database, so the queue stays short
    # for codes and single messages), and a worker's campaign messages in flight at once. The
    # creates in flight, not the CPU, bounded a campaign's rate at 20 (bench.bulk, 40,000
    # recipients: ~1,040/s at 20, ~1,140-1,210/s at 40, ~1,430/s at 64, the machine not busy
    # throughout); 40 leaves 10 of TWILIO_MAX_CONNECTIONS' 50 to codes and single messages, and
    # 2 workers under Twilio's account limit on concurrent requests (20429 past it).
    campaign_chunk_size: int = Field(default=500, ge=1, le=10_000)
    campaign_parallel_chunks: int = Field(default=4, ge=1, le=100)
    campaign_concurrency: int = Field(default=40, ge=1, le=1000)

    # One-time codes (SPEC §8) and the limits that keep SMS pumping from paying off.
    otp_ttl_seconds: int = Field(default=600, ge=60, le=3600)
    otp_max_wrong_tries: int = Field(default=5, ge=1, le=20)
    otp_resend_cooldown_seconds: int = Field(default=30, ge=0, le=3600)
    otp_sends_per_number_per_10_minutes: int = Field(default=5, ge=1)
    otp_sends_per_user_per_hour: int = Field(default=10, ge=1)
    otp_sends_per_ip_per_hour: int = Field(default=20, ge=1)
    # Numbers sharing all but their last 3 digits: pumping rings rent consecutive numbers.
    otp_sends_per_prefix_per_hour: int = Field(default=20, ge=1)
    otp_sends_per_country_per_day: int = Field(default=1000, ge=1)
    # Code requests and checks answer no sooner than this: whether a user or number exists
    # changes how much work a request does, and must not show in its timing. 0 disables.
    otp_response_floor_ms: int = Field(default=100, ge=0, le=5000)

    # Replies to inbound keywords (unless Twilio's Advanced Opt-Out already answered).
    sms_help_reply: str = (
        "SMS notifications. Reply STOP to unsubscribe, START to resubscribe. "
        "Msg&data rates may apply."
    )
    sms_opt_out_reply: str = (
        "You are unsubscribed and will receive no more messages. Reply START to resubscribe."
    )
    sms_opt_in_reply: str = "You are resubscribed. Reply STOP to unsubscribe."

    # Notifications: a directory of `<locale>.toml` files whose entries replace the built-in
    # templates (app/notifications/templates); read again when a file changes.
    notification_templates_dir: str | None = None
    # Quiet hours (SPEC §6), in the recipient's local time: marketing and bulk messages that
    # would arrive between START and END wait until END. Equal times: no quiet hours.
    quiet_hours_start: time = time(21, 0)
    quiet_hours_end: time = time(8, 0)

    # Retention (SPEC §9): bodies are erased after the first, message rows deleted after the
    # second (their counts kept as daily aggregates, so analytics of old periods stay right).
    message_body_retention_days: int = Field(default=7, ge=1)
    message_retention_days: int = Field(default=365, ge=1)
    # Cost estimate for messages whose price Twilio has not reported (yet): per segment.
    sms_estimated_price_per_segment: Decimal = Field(default=Decimal("0.0083"), ge=0)
    sms_price_currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")

    local_data_dir: str = ".data"

    @field_validator("sms_allowed_countries", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().upper() for part in value.split(",") if part.strip()]
        return value

    @field_validator(
        "jwt_secret",
        "jwt_public_key",
        "jwt_audience",
        "jwt_issuer",
        "twilio_account_sid",
        "twilio_auth_token",
        "twilio_api_key_sid",
        "twilio_api_key_secret",
        "twilio_from_number",
        "twilio_messaging_service_sid",
        "twilio_base_url",
        "notification_templates_dir",
        mode="before",
    )
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
    def _twilio_is_complete(self) -> Settings:
        if self.twilio_account_sid is None:
            if self.app_env == "production":
                raise ValueError("production needs TWILIO_ACCOUNT_SID (the sandbox is for dev)")
            return self
        # The auth token signs every callback Twilio sends: without it, anyone could forge one.
        if self.twilio_auth_token is None:
            raise ValueError(
                "TWILIO_ACCOUNT_SID needs TWILIO_AUTH_TOKEN (it checks Twilio's signatures, "
                "even when requests use TWILIO_API_KEY_SID)"
            )
        if bool(self.twilio_api_key_sid) != bool(self.twilio_api_key_secret):
            raise ValueError("TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET go together")
        if not (self.twilio_from_number or self.twilio_messaging_service_sid):
            raise ValueError("set TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID")
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

    @property
    def twilio_sandboxed(self) -> bool:
        return self.twilio_account_sid is None

    @property
    def twilio(self) -> TwilioAccount:
        """Where and how to reach Twilio, or the sandbox standing in for it."""
        if self.twilio_account_sid is None:
            base = str(self.twilio_base_url or f"{self.public_base}{SANDBOX_MOUNT_PATH}")
            return TwilioAccount(
                account_sid=SANDBOX_ACCOUNT_SID,
                username=SANDBOX_ACCOUNT_SID,
                password=SANDBOX_AUTH_TOKEN,
                auth_token=SANDBOX_AUTH_TOKEN,
                base_url=base.rstrip("/"),
                from_number=self.twilio_from_number or SANDBOX_FROM_NUMBER,
                messaging_service_sid=self.twilio_messaging_service_sid,
            )
        token = self.twilio_auth_token.get_secret_value() if self.twilio_auth_token else ""
        username, password = self.twilio_account_sid, token
        if self.twilio_api_key_sid and self.twilio_api_key_secret:
            username = self.twilio_api_key_sid
            password = self.twilio_api_key_secret.get_secret_value()
        return TwilioAccount(
            account_sid=self.twilio_account_sid,
            username=username,
            password=password,
            auth_token=token,
            base_url=str(self.twilio_base_url or "https://api.twilio.com").rstrip("/"),
            from_number=self.twilio_from_number,
            messaging_service_sid=self.twilio_messaging_service_sid,
        )


@dataclass(frozen=True, slots=True)
class TwilioAccount:
    account_sid: str
    username: str
    password: str
    # Signs callbacks; with an API key for requests, callbacks are still signed with this.
    auth_token: str
    base_url: str
    from_number: str | None
    messaging_service_sid: str | None
