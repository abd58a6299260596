"""End-user JWTs (HS256 or RS256) checked without HTTP, and phone numbers masked in log records."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from app.auth.exceptions import InvalidToken
from app.auth.principal import Principal, Scope
from app.auth.tokens import TokenVerifier
from app.core.logging import install_phone_masking
from app.core.settings import Settings
from app.core.types import USER_ID_MAX_LENGTH
from tests.support import RsaKeys, generate_rsa_keys

SECRET = "unit-test-jwt-secret-that-is-long-enough-for-hs256"


@pytest.fixture(scope="module")
def keys() -> RsaKeys:
    return generate_rsa_keys()


@pytest.fixture(scope="module")
def other_keys() -> RsaKeys:
    return generate_rsa_keys()


@pytest.fixture(autouse=True)
def _no_jwt_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "JWT_SECRET",
        "JWT_PUBLIC_KEY",
        "JWT_AUDIENCE",
        "JWT_ISSUER",
        "JWT_ADMIN_CLAIM",
        "JWT_LEEWAY_SECONDS",
        "APP_ENV",
    ):
        monkeypatch.delenv(name, raising=False)


def make_verifier(keys: RsaKeys, **values: Any) -> TokenVerifier:
    settings: dict[str, Any] = {"jwt_secret": SECRET, "jwt_public_key": keys.public_pem}
    return TokenVerifier(Settings(_env_file=None, **(settings | values)))


def claims(
    sub: object = "alice", expires_in: timedelta = timedelta(minutes=5), **extra: Any
) -> dict[str, Any]:
    return {"sub": sub, "exp": datetime.now(UTC) + expires_in, **extra}


def hs256(payload: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], hmac_key: bytes | None) -> str:
    """A token built by hand, as an attacker would: PyJWT refuses to make these."""
    payload = {
        name: int(value.timestamp()) if isinstance(value, datetime) else value
        for name, value in payload.items()
    }
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = b""
    if hmac_key is not None:
        signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def refused(verifier: TokenVerifier, token: str) -> InvalidToken:
    with pytest.raises(InvalidToken) as raised:
        verifier.verify(token)
    assert raised.value.status == 401
    return raised.value


# --- HS256 -----------------------------------------------------------------------------------


def test_a_good_hs256_token_gives_a_user_principal(keys: RsaKeys) -> None:
    principal = make_verifier(keys).verify(hs256(claims("alice")))

    assert principal == Principal(kind="user", id="alice", name="alice", scopes=frozenset())
    assert not principal.is_admin


@pytest.mark.parametrize("value", [True, "admin", ["admin"], ["user", "admin"]])
def test_the_admin_claim_makes_an_admin(keys: RsaKeys, value: object) -> None:
    principal = make_verifier(keys).verify(hs256(claims(admin=value)))

    assert principal.is_admin
    assert principal.scopes == frozenset({Scope.ADMIN})
    assert principal.can(Scope.SMS_BULK)


@pytest.mark.parametrize(
    "value",
    [
        False,
        None,
        1,
        "true",
        "yes",
        "Admin",
        "administrator",
        "",
        [],
        ["user"],
        ["Admin"],
        {"admin": True},
    ],
)
def test_other_admin_claim_values_do_not_make_an_admin(keys: RsaKeys, value: object) -> None:
    principal = make_verifier(keys).verify(hs256(claims(admin=value)))

    assert not principal.is_admin
    assert principal.scopes == frozenset()


def test_the_admin_claim_name_is_configurable(keys: RsaKeys) -> None:
    verifier = make_verifier(keys, jwt_admin_claim="roles")

    assert verifier.verify(hs256(claims(roles=["admin"]))).is_admin
    assert not verifier.verify(hs256(claims(admin=True))).is_admin


def test_an_expired_token_is_refused_as_expired(keys: RsaKeys) -> None:
    error = refused(make_verifier(keys), hs256(claims(expires_in=-timedelta(hours=1))))

    assert error.code == "token_expired"


@pytest.mark.parametrize("missing", ["exp", "sub"])
def test_a_token_without_exp_or_sub_is_refused(keys: RsaKeys, missing: str) -> None:
    payload = claims()
    del payload[missing]

    error = refused(make_verifier(keys), hs256(payload))

    assert error.code == "invalid_token"
    assert missing in str(error)


def test_a_token_signed_with_another_secret_is_refused(keys: RsaKeys) -> None:
    error = refused(make_verifier(keys), hs256(claims(), secret=SECRET + "-but-another"))

    assert error.code == "invalid_token"


@pytest.mark.parametrize("algorithm", ["none", "None", "NONE"])
def test_an_unsigned_token_is_refused(keys: RsaKeys, algorithm: str) -> None:
    token = forge({"alg": algorithm, "typ": "JWT"}, claims(admin=True), hmac_key=None)

    error = refused(make_verifier(keys), token)

    assert error.code == "invalid_token"


def test_a_token_without_an_algorithm_is_refused(keys: RsaKeys) -> None:
    token = forge({"typ": "JWT"}, claims(), hmac_key=SECRET.encode())

    refused(make_verifier(keys), token)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_an_hs512_token_is_refused_even_with_the_right_secret(keys: RsaKeys) -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS512")

    refused(make_verifier(keys), token)


@pytest.mark.parametrize("secret", [SECRET, ""], ids=["with-secret", "public-key-only"])
def test_an_hs256_token_keyed_with_the_public_key_is_refused(keys: RsaKeys, secret: str) -> None:
    # Algorithm confusion: a verifier that handed the RS256 key to HMAC would accept this.
    token = forge(
        {"alg": "HS256", "typ": "JWT"}, claims(admin=True), hmac_key=keys.public_pem.encode()
    )

    refused(make_verifier(keys, jwt_secret=secret), token)


def test_hs256_tokens_are_refused_when_no_secret_is_set(keys: RsaKeys) -> None:
    refused(make_verifier(keys, jwt_secret=""), hs256(claims()))


# --- RS256 -----------------------------------------------------------------------------------


def test_an_rs256_token_signed_by_the_matching_private_key_is_accepted(keys: RsaKeys) -> None:
    token = jwt.encode(claims("bob", admin=True), keys.private_pem, algorithm="RS256")

    principal = make_verifier(keys, jwt_secret="").verify(token)

    assert principal.id == "bob"
    assert principal.is_admin


def test_an_rs256_token_signed_by_another_private_key_is_refused(
    keys: RsaKeys, other_keys: RsaKeys
) -> None:
    token = jwt.encode(claims("bob"), other_keys.private_pem, algorithm="RS256")

    error = refused(make_verifier(keys), token)

    assert error.code == "invalid_token"


def test_rs256_tokens_are_refused_when_no_public_key_is_set(keys: RsaKeys) -> None:
    token = jwt.encode(claims("bob"), keys.private_pem, algorithm="RS256")

    refused(make_verifier(keys, jwt_public_key=None), token)


# --- audience, issuer, subject ---------------------------------------------------------------


@pytest.mark.parametrize(
    "audience",
    [{}, {"aud": "another-service"}, {"aud": ["another-service"]}],
    ids=["no-aud", "wrong-aud", "wrong-aud-list"],
)
def test_with_an_audience_set_other_tokens_are_refused(
    keys: RsaKeys, audience: dict[str, Any]
) -> None:
    verifier = make_verifier(keys, jwt_audience="sms-service")

    error = refused(verifier, hs256(claims(**audience)))

    assert error.code == "invalid_token"


@pytest.mark.parametrize("aud", ["sms-service", ["billing", "sms-service"]])
def test_with_an_audience_set_a_token_for_it_is_accepted(keys: RsaKeys, aud: object) -> None:
    verifier = make_verifier(keys, jwt_audience="sms-service")

    assert verifier.verify(hs256(claims(aud=aud))).id == "alice"


def test_without_an_audience_set_the_aud_claim_is_ignored(keys: RsaKeys) -> None:
    assert make_verifier(keys).verify(hs256(claims(aud="anything"))).id == "alice"


@pytest.mark.parametrize("issuer", [{}, {"iss": "https://evil.example"}])
def test_with_an_issuer_set_other_tokens_are_refused(keys: RsaKeys, issuer: dict[str, Any]) -> None:
    verifier = make_verifier(keys, jwt_issuer="https://id.example")

    refused(verifier, hs256(claims(**issuer)))
    assert verifier.verify(hs256(claims(iss="https://id.example"))).id == "alice"


def test_a_subject_of_the_maximum_length_is_accepted(keys: RsaKeys) -> None:
    subject = "u" * USER_ID_MAX_LENGTH

    assert make_verifier(keys).verify(hs256(claims(subject))).id == subject


@pytest.mark.parametrize(
    "subject",
    ["u" * (USER_ID_MAX_LENGTH + 1), "", 42, None],
    ids=["256-chars", "empty", "int", "null"],
)
def test_a_bad_subject_is_refused(keys: RsaKeys, subject: object) -> None:
    token = forge({"alg": "HS256", "typ": "JWT"}, claims(subject), hmac_key=SECRET.encode())

    error = refused(make_verifier(keys), token)

    assert error.code == "invalid_token"


@pytest.mark.parametrize(
    "token", ["garbage", "", "a.b.c", "Bearer x.y.z", "eyJhbGciOiJIUzI1NiJ9..", "....."]
)
def test_garbage_is_refused(keys: RsaKeys, token: str) -> None:
    error = refused(make_verifier(keys), token)

    assert error.code == "invalid_token"


# --- leeway ----------------------------------------------------------------------------------


def test_a_token_expired_within_the_leeway_is_accepted(keys: RsaKeys) -> None:
    token = hs256(claims(expires_in=-timedelta(seconds=10)))

    assert make_verifier(keys).verify(token).id == "alice"


def test_a_token_expired_beyond_the_leeway_is_refused(keys: RsaKeys) -> None:
    token = hs256(claims(expires_in=-timedelta(seconds=60)))

    assert refused(make_verifier(keys), token).code == "token_expired"


def test_the_leeway_is_configurable(keys: RsaKeys) -> None:
    token = hs256(claims(expires_in=-timedelta(seconds=10)))

    assert refused(make_verifier(keys, jwt_leeway_seconds=0), token).code == "token_expired"
    assert (
        make_verifier(keys, jwt_leeway_seconds=120)
        .verify(hs256(claims(expires_in=-timedelta(seconds=60))))
        .id
        == "alice"
    )


# --- phone numbers in log records ------------------------------------------------------------


@pytest.fixture
def masking() -> Iterator[None]:
    original = logging.getLogRecordFactory()
    install_phone_masking()
    try:
        yield
    finally:
        logging.setLogRecordFactory(original)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.usefixtures("masking")
def test_phone_numbers_are_masked_in_log_records(caplog: pytest.LogCaptureFixture) -> None:
    logging.getLogger("x").warning("sending to %s", "+14155552671")

    assert "+1415*****71" in caplog.text
    assert "+14155552671" not in caplog.text
    assert "4155552671" not in caplog.text
    assert [record.getMessage() for record in caplog.records] == ["sending to +1415*****71"]


@pytest.mark.usefixtures("masking")
def test_records_without_numbers_are_left_as_they_are(caplog: pytest.LogCaptureFixture) -> None:
    logging.getLogger("x").warning("retry %d of %d for %s", 3, 12, "user-1")

    (record,) = caplog.records
    assert record.msg == "retry %d of %d for %s"
    assert record.args == (3, 12, "user-1")
    assert record.getMessage() == "retry 3 of 12 for user-1"


def test_installing_twice_wraps_the_factory_once(masking: None) -> None:
    installed = logging.getLogRecordFactory()

    install_phone_masking()

    assert logging.getLogRecordFactory() is installed


@pytest.mark.usefixtures("masking")
def test_a_malformed_logging_call_does_not_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    logger = logging.getLogger("tests.malformed")
    handler = _Collect()
    monkeypatch.setattr(logger, "propagate", False)
    logger.addHandler(handler)
    try:
        logger.warning("sending %s to %s", "+14155552671")
    finally:
        logger.removeHandler(handler)

    assert len(handler.records) == 1


@pytest.mark.usefixtures("masking")
def test_phone_numbers_are_masked_in_logged_exceptions(caplog: pytest.LogCaptureFixture) -> None:
    try:
        raise ValueError("Twilio refused +14155552671")
    except ValueError:
        logging.getLogger("x").exception("sending failed")

    assert "Twilio refused" in caplog.text
    assert "+14155552671" not in caplog.text


def test_a_public_key_that_is_not_pem_stops_the_service_at_startup() -> None:
    settings = Settings(_env_file=None, jwt_public_key="-----BEGIN PUBLIC KEY-----\nnope\n")

    with pytest.raises(ValueError, match="JWT_PUBLIC_KEY"):
        TokenVerifier(settings)
