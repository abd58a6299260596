"""Settings: safe development defaults, placeholder secrets refused in production, keys parsed."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
from pydantic import ValidationError

from app.core.crypto import PhoneCipher
from app.core.settings import (
    DEV_JWT_SECRET,
    DEV_PHONE_BLIND_INDEX_KEY,
    DEV_PHONE_ENCRYPTION_KEYS,
    Settings,
)

_ENVIRONMENT = (
    "APP_ENV",
    "LOG_LEVEL",
    "DATABASE_URL",
    "REDIS_URL",
    "PUBLIC_BASE_URL",
    "JWT_SECRET",
    "JWT_PUBLIC_KEY",
    "JWT_AUDIENCE",
    "JWT_ISSUER",
    "JWT_ADMIN_CLAIM",
    "JWT_LEEWAY_SECONDS",
    "PHONE_ENCRYPTION_KEYS",
    "PHONE_BLIND_INDEX_KEY",
    "DEFAULT_PHONE_REGION",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_API_KEY_SID",
    "TWILIO_API_KEY_SECRET",
    "TWILIO_FROM_NUMBER",
    "TWILIO_MESSAGING_SERVICE_SID",
    "TWILIO_BASE_URL",
    "SMS_ALLOWED_COUNTRIES",
)

TWILIO = {
    "twilio_account_sid": "AC" + "0123456789abcdef" * 2,
    "twilio_auth_token": "twilio-auth-token",
    "twilio_from_number": "+14155550100",
}
KEY_1 = bytes(range(32))
KEY_2 = bytes(range(200, 232))
REAL_KEYS = "1:" + base64.b64encode(KEY_1).decode()
REAL_BLIND_INDEX_KEY = "a-real-blind-index-key-from-the-vault"
REAL_JWT_SECRET = "a-real-jwt-secret-from-the-identity-provider"
DEV_KEY_BASE64 = DEV_PHONE_ENCRYPTION_KEYS.partition(":")[2]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


def make_settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def production(**values: Any) -> Settings:
    real: dict[str, Any] = {
        "app_env": "production",
        "phone_encryption_keys": REAL_KEYS,
        "phone_blind_index_key": REAL_BLIND_INDEX_KEY,
        "jwt_secret": REAL_JWT_SECRET,
        **TWILIO,
    }
    return make_settings(**(real | values))


def test_development_defaults_load() -> None:
    settings = make_settings()

    assert settings.app_env == "development"
    assert settings.database_url is None
    assert settings.redis_url is None
    assert settings.jwt_secret is not None
    assert settings.jwt_secret.get_secret_value() == DEV_JWT_SECRET
    assert settings.jwt_public_key is None
    assert settings.jwt_audience is None
    assert settings.jwt_leeway_seconds == 30
    assert settings.jwt_admin_claim == "admin"
    assert settings.phone_blind_index_key.get_secret_value() == DEV_PHONE_BLIND_INDEX_KEY
    assert settings.phone_keys == {1: b"dev-only-phone-encryption-key-01"}
    assert settings.default_phone_region == "US"
    assert settings.public_base == "http://localhost:8000"


def test_secrets_are_not_shown_in_the_settings_repr() -> None:
    text = repr(make_settings(jwt_secret=REAL_JWT_SECRET, phone_encryption_keys=REAL_KEYS))

    assert REAL_JWT_SECRET not in text
    assert REAL_KEYS not in text


def test_the_test_environment_accepts_the_development_placeholders() -> None:
    assert make_settings(app_env="test").app_env == "test"


def test_production_with_the_development_defaults_is_refused() -> None:
    with pytest.raises(ValidationError, match="placeholder"):
        make_settings(app_env="production")


@pytest.mark.parametrize(
    "placeholder",
    [
        {"phone_encryption_keys": DEV_PHONE_ENCRYPTION_KEYS},
        {"phone_blind_index_key": DEV_PHONE_BLIND_INDEX_KEY},
        {"phone_blind_index_key": "change-me"},
        {"jwt_secret": DEV_JWT_SECRET},
        {"jwt_secret": "change-me"},
    ],
    ids=["encryption-keys", "blind-index-key", "blind-index-change-me", "jwt", "jwt-change-me"],
)
def test_production_refuses_any_single_placeholder(placeholder: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="placeholder"):
        production(**placeholder)


def test_production_with_real_values_loads() -> None:
    settings = production(database_url="postgres://sms@db:5432/sms")

    assert settings.app_env == "production"
    assert settings.phone_keys == {1: KEY_1}
    assert settings.database_url == "postgresql+asyncpg://sms@db:5432/sms"


def test_production_may_use_only_a_public_key_for_jwts() -> None:
    settings = production(jwt_secret="", jwt_public_key="-----BEGIN PUBLIC KEY-----...")

    assert settings.jwt_secret is None
    assert settings.jwt_public_key == "-----BEGIN PUBLIC KEY-----..."


@pytest.mark.parametrize(
    "keys",
    [
        f"2:{DEV_KEY_BASE64}",
        f"{REAL_KEYS},2:{DEV_KEY_BASE64}",
        f" {DEV_PHONE_ENCRYPTION_KEYS}",
    ],
    ids=["other-version", "with-a-real-key", "padded"],
)
def test_production_refuses_the_published_development_key_however_spelled(keys: str) -> None:
    assert (
        b"dev-only-phone-encryption-key-01"
        in make_settings(phone_encryption_keys=keys).phone_keys.values()
    )

    with pytest.raises(ValidationError, match="placeholder"):
        production(phone_encryption_keys=keys)


@pytest.mark.parametrize(
    ("given_url", "expected"),
    [
        ("postgresql://sms:pw@db:5432/sms", "postgresql+asyncpg://sms:pw@db:5432/sms"),
        ("postgres://sms:pw@db:5432/sms", "postgresql+asyncpg://sms:pw@db:5432/sms"),
        ("postgres://postgres@db/postgres", "postgresql+asyncpg://postgres@db/postgres"),
        ("postgresql+asyncpg://sms@db/sms", "postgresql+asyncpg://sms@db/sms"),
    ],
)
def test_database_urls_are_made_asyncpg_urls(given_url: str, expected: str) -> None:
    assert make_settings(database_url=given_url).database_url == expected


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ("1:not base64!", "version:base64"),
        ("1:" + base64.b64encode(KEY_1).decode()[:-1], "version:base64"),
        ("one:" + base64.b64encode(KEY_1).decode(), "version:base64"),
        (base64.b64encode(KEY_1).decode(), "version:base64"),
        ("", "version:base64"),
        (REAL_KEYS + ",", "version:base64"),
        ("1:" + base64.b64encode(KEY_1[:16]).decode(), "32 bytes"),
        ("1:" + base64.b64encode(KEY_1 + b"!").decode(), "32 bytes"),
        ("0:" + base64.b64encode(KEY_1).decode(), "versions 1-255"),
        ("256:" + base64.b64encode(KEY_1).decode(), "versions 1-255"),
        ("300:" + base64.b64encode(KEY_1).decode(), "versions 1-255"),
        ("-1:" + base64.b64encode(KEY_1).decode(), "versions 1-255"),
    ],
    ids=[
        "bad-base64",
        "bad-padding",
        "version-not-a-number",
        "no-version",
        "empty",
        "trailing-comma",
        "16-byte-key",
        "33-byte-key",
        "version-0",
        "version-256",
        "version-300",
        "version-negative",
    ],
)
def test_malformed_phone_encryption_keys_are_refused(keys: str, message: str) -> None:
    with pytest.raises(ValidationError, match="PHONE_ENCRYPTION_KEYS") as raised:
        make_settings(phone_encryption_keys=keys)

    assert message in str(raised.value)


def test_several_phone_encryption_keys_parse_and_the_newest_encrypts() -> None:
    keys = f"1:{base64.b64encode(KEY_1).decode()}, 255:{base64.b64encode(KEY_2).decode()}"

    settings = make_settings(phone_encryption_keys=keys)

    assert settings.phone_keys == {1: KEY_1, 255: KEY_2}
    cipher = PhoneCipher(settings.phone_keys, b"index")
    assert cipher.current_version == 255
    assert cipher.encrypt("+14155552671")[0] == 255


@pytest.mark.parametrize("field", ["jwt_secret", "jwt_public_key", "jwt_audience", "jwt_issuer"])
def test_an_empty_jwt_setting_means_unset(field: str) -> None:
    assert getattr(make_settings(**{field: ""}), field) is None


def test_an_empty_jwt_secret_in_the_environment_means_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JWT_SECRET", "")

    assert make_settings().jwt_secret is None


def test_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEFAULT_PHONE_REGION", "GB")
    monkeypatch.setenv("DATABASE_URL", "postgres://env@db/env")
    monkeypatch.setenv("PHONE_ENCRYPTION_KEYS", f"7:{base64.b64encode(KEY_2).decode()}")
    monkeypatch.setenv("JWT_LEEWAY_SECONDS", "5")

    settings = make_settings()

    assert settings.default_phone_region == "GB"
    assert settings.database_url == "postgresql+asyncpg://env@db/env"
    assert settings.phone_keys == {7: KEY_2}
    assert settings.jwt_leeway_seconds == 5


def test_production_placeholders_are_refused_from_the_environment_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APP_ENV", "production")

    with pytest.raises(ValidationError, match="placeholder"):
        make_settings()


@pytest.mark.parametrize("region", ["gb", "GBR", "G1", ""])
def test_a_malformed_default_region_is_refused(region: str) -> None:
    with pytest.raises(ValidationError, match="default_phone_region"):
        make_settings(default_phone_region=region)


@pytest.mark.parametrize("leeway", [-1, 301])
def test_the_jwt_leeway_is_bounded(leeway: int) -> None:
    with pytest.raises(ValidationError, match="jwt_leeway_seconds"):
        make_settings(jwt_leeway_seconds=leeway)


@pytest.mark.parametrize("name", ["PHONE_BLIND_INDEX_KEY", "JWT_SECRET"])
def test_production_refuses_short_hmac_secrets(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    strong = {
        "PHONE_ENCRYPTION_KEYS": "1:" + base64.b64encode(os.urandom(32)).decode(),
        "PHONE_BLIND_INDEX_KEY": "b" * 32,
        "JWT_SECRET": "j" * 32,
    }
    for key, value in {**strong, **_twilio_env(), name: "short"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("APP_ENV", "production")

    with pytest.raises(ValidationError, match=name):
        Settings(_env_file=None)

    monkeypatch.setenv(name, "x" * 32)
    assert Settings(_env_file=None).app_env == "production"


def _twilio_env() -> dict[str, str]:
    return {name.upper(): value for name, value in TWILIO.items()}


def test_production_needs_a_twilio_account() -> None:
    with pytest.raises(ValidationError, match="TWILIO_ACCOUNT_SID"):
        production(twilio_account_sid=None)


def test_a_twilio_account_needs_credentials_and_a_sender() -> None:
    with pytest.raises(ValidationError, match="TWILIO_AUTH_TOKEN"):
        make_settings(twilio_account_sid=TWILIO["twilio_account_sid"])
    with pytest.raises(ValidationError, match="TWILIO_FROM_NUMBER"):
        make_settings(twilio_account_sid=TWILIO["twilio_account_sid"], twilio_auth_token="token")


def test_without_a_twilio_account_the_sandbox_stands_in() -> None:
    settings = make_settings(public_base_url="https://sms.example.com")

    assert settings.twilio_sandboxed
    assert settings.twilio.base_url == "https://sms.example.com/twilio-sandbox"
    assert settings.twilio.from_number == "+15005550006"


def test_a_twilio_api_key_authenticates_requests_and_the_token_signs() -> None:
    settings = make_settings(
        **TWILIO, twilio_api_key_sid="SK" + "ab" * 16, twilio_api_key_secret="key-secret"
    )

    assert (settings.twilio.username, settings.twilio.password) == ("SK" + "ab" * 16, "key-secret")
    assert settings.twilio.auth_token == "twilio-auth-token"
    assert settings.twilio.base_url == "https://api.twilio.com"


def test_allowed_countries_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMS_ALLOWED_COUNTRIES", "us, gb,FR")

    assert make_settings().sms_allowed_countries == ["US", "GB", "FR"]


def test_an_api_key_does_not_replace_the_auth_token() -> None:
    # The token signs Twilio's callbacks: without it any callback could be forged.
    with pytest.raises(ValidationError, match="TWILIO_AUTH_TOKEN"):
        make_settings(
            twilio_account_sid=TWILIO["twilio_account_sid"],
            twilio_api_key_sid="SK" + "ab" * 16,
            twilio_api_key_secret="key-secret",
            twilio_from_number="+14155550100",
        )
