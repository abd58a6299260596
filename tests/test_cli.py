"""The operators' command line, run as an operator would: against the real test database.

The CLI commits for real (outside the test transaction), so every row a test makes is removed
at its end, and assertions only look at the rows the test made."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import secrets
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from click.testing import CliRunner, Result
from pydantic import SecretStr
from sqlalchemy import RowMapping, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from app.auth.exceptions import InvalidToken
from app.auth.tokens import TokenVerifier
from app.cli import cli
from app.core.database import create_engine, create_sessionmaker, transaction
from app.core.settings import Settings
from app.main import create_app
from app.users.service import ensure_users
from tests.conftest import bearer

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Settings the developer's shell might carry, which would change what the CLI does.
_AMBIENT_SETTINGS = (
    "APP_ENV",
    "DATABASE_URL",
    "REDIS_URL",
    "JWT_SECRET",
    "JWT_PUBLIC_KEY",
    "JWT_AUDIENCE",
    "JWT_ISSUER",
    "JWT_ADMIN_CLAIM",
    "PHONE_ENCRYPTION_KEYS",
    "PHONE_BLIND_INDEX_KEY",
)


def _fetch(url: str, query: str, **params: Any) -> list[RowMapping]:
    """Runs one statement on a connection of its own, committed: it sees what the CLI
    committed, and nothing of any test transaction."""

    async def run() -> list[RowMapping]:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.begin() as connection:
                result = await connection.execute(text(query), params)
                return list(result.mappings()) if result.returns_rows else []
        finally:
            await engine.dispose()

    return asyncio.run(run())


@pytest.fixture
def database(settings: Settings) -> str:
    assert settings.database_url is not None
    return settings.database_url


@pytest.fixture
def cli_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings: Settings, database: str
) -> Settings:
    """The CLI's environment: the test servers, no `.env` or `.data/local.env` from the repo."""
    monkeypatch.chdir(tmp_path)
    for name in _AMBIENT_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    assert settings.redis_url is not None
    monkeypatch.setenv("DATABASE_URL", database)
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    return settings


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def created_keys(database: str) -> Iterator[list[str]]:
    """Ids of the api_keys rows a test created; deleted afterwards."""
    ids: list[str] = []
    yield ids
    if ids:
        _fetch(database, "DELETE FROM api_keys WHERE id::text = ANY(:ids)", ids=ids)


def invoke(runner: CliRunner, args: Sequence[str]) -> Result:
    return runner.invoke(cli, list(args), catch_exceptions=False)


def create_key(runner: CliRunner, created: list[str], name: str, *scopes: str) -> tuple[str, str]:
    """Creates a key with the CLI; returns its id and secret."""
    args = ["api-keys", "create", "--name", name]
    for scope in scopes:
        args += ["--scope", scope]
    result = invoke(runner, args)
    assert result.exit_code == 0, result.output
    key_id = re.search(r"^id:\s+(\S+)$", result.output, re.MULTILINE)
    secret = re.search(r"^secret:\s+(\S+)$", result.output, re.MULTILINE)
    assert key_id is not None, result.output
    assert secret is not None, result.output
    created.append(key_id.group(1))
    return key_id.group(1), secret.group(1)


def listing(runner: CliRunner, *flags: str) -> Result:
    result = invoke(runner, ["api-keys", "list", *flags])
    assert result.exit_code == 0, result.output
    return result


def line_for(output: str, key_id: str) -> str | None:
    return next((line for line in output.splitlines() if line.startswith(key_id)), None)


def api_get(settings: Settings, path: str, token: str) -> httpx.Response:
    """One request to the real app (its own lifespan, the test database)."""

    async def call() -> httpx.Response:
        application = create_app(settings)
        async with LifespanManager(application) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://cli") as client:
                return await client.get(path, headers=bearer(token))

    return asyncio.run(call())


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


# api-keys


def test_create_shows_the_secret_once_and_stores_only_its_hash(
    runner: CliRunner, cli_env: Settings, database: str, created_keys: list[str]
) -> None:
    name = unique("cli-create")
    result = invoke(
        runner,
        ["api-keys", "create", "--name", name, "--scope", "sms:send", "--scope", "users:write"],
    )

    assert result.exit_code == 0, result.output
    secret_match = re.search(r"^secret:\s+(\S+)$", result.output, re.MULTILINE)
    id_match = re.search(r"^id:\s+(\S+)$", result.output, re.MULTILINE)
    assert secret_match is not None, result.output
    assert id_match is not None, result.output
    secret, key_id = secret_match.group(1), id_match.group(1)
    created_keys.append(key_id)
    assert secret.startswith("smsk_")
    assert len(secret) > 40  # 32 random bytes, url-safe
    assert result.output.count(secret) == 1
    assert re.search(rf"^name:\s+{name}$", result.output, re.MULTILINE)
    assert re.search(r"^scopes:\s+sms:send users:write$", result.output, re.MULTILINE)

    rows = _fetch(database, "SELECT * FROM api_keys WHERE id = CAST(:id AS uuid)", id=key_id)
    assert len(rows) == 1
    row = rows[0]
    assert row["name"] == name
    assert bytes(row["key_hash"]) == hashlib.sha256(secret.encode()).digest()
    assert row["prefix"] == secret[:12]
    assert sorted(row["scopes"]) == ["sms:send", "users:write"]
    assert row["revoked_at"] is None
    assert row["last_used_at"] is None
    # No row anywhere in the table holds the secret, in any column.
    holding = _fetch(
        database, "SELECT id FROM api_keys AS k WHERE strpos(k::text, :secret) > 0", secret=secret
    )
    assert holding == []


def test_list_shows_prefix_and_name_but_never_the_secret(
    runner: CliRunner, cli_env: Settings, created_keys: list[str]
) -> None:
    name = unique("cli-list")
    key_id, secret = create_key(runner, created_keys, name, "sms:read")

    result = listing(runner)

    assert secret not in result.output
    assert secret[12:] not in result.output
    line = line_for(result.output, key_id)
    assert line is not None, result.output
    assert secret[:12] in line
    assert name in line
    assert "[sms:read]" in line
    assert "last used never" in line
    assert line.endswith("active")


def test_a_created_key_authenticates_against_the_api_until_revoked(
    runner: CliRunner, cli_env: Settings, created_keys: list[str]
) -> None:
    key_id, secret = create_key(runner, created_keys, unique("cli-auth"), "sms:send", "users:write")
    missing_user = f"/api/users/{unique('nobody')}"

    accepted = api_get(cli_env, missing_user, secret)

    # Authenticated and allowed (users:write): the only thing wrong is the unknown user.
    assert accepted.status_code == 404, accepted.text
    assert accepted.json()["code"] == "user_not_found"
    used = line_for(listing(runner).output, key_id)
    assert used is not None
    assert "last used never" not in used

    revoked = invoke(runner, ["api-keys", "revoke", secret[:12]])
    assert revoked.exit_code == 0, revoked.output

    refused = api_get(cli_env, missing_user, secret)
    assert refused.status_code == 401
    assert refused.json()["code"] == "invalid_api_key"


def test_a_key_without_the_scope_is_forbidden(
    runner: CliRunner, cli_env: Settings, created_keys: list[str]
) -> None:
    _, secret = create_key(runner, created_keys, unique("cli-scope"), "sms:send")

    response = api_get(cli_env, f"/api/users/{unique('nobody')}", secret)

    assert response.status_code == 403
    assert response.json()["code"] == "missing_scope"


def test_revoke_by_prefix_hides_the_key_unless_all_is_asked(
    runner: CliRunner, cli_env: Settings, created_keys: list[str]
) -> None:
    name = unique("cli-revoke")
    key_id, secret = create_key(runner, created_keys, name, "sms:send")
    kept_id, _ = create_key(runner, created_keys, unique("cli-kept"), "sms:send")

    result = invoke(runner, ["api-keys", "revoke", secret[:12]])

    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"revoked {key_id} ({name})"
    active = listing(runner).output
    assert line_for(active, key_id) is None
    assert line_for(active, kept_id) is not None  # only that key went
    everything = listing(runner, "--all").output
    line = line_for(everything, key_id)
    assert line is not None, everything
    assert re.search(r"revoked \d{4}-\d{2}-\d{2} \d{2}:\d{2}$", line), line
    assert secret not in everything


def test_revoke_by_id_works_too(
    runner: CliRunner, cli_env: Settings, database: str, created_keys: list[str]
) -> None:
    key_id, _ = create_key(runner, created_keys, unique("cli-revoke-id"), "sms:send")

    result = invoke(runner, ["api-keys", "revoke", key_id])

    assert result.exit_code == 0, result.output
    rows = _fetch(
        database, "SELECT revoked_at FROM api_keys WHERE id = CAST(:id AS uuid)", id=key_id
    )
    assert rows[0]["revoked_at"] is not None


@pytest.mark.parametrize("key", ["smsk_nothere", "00000000-0000-0000-0000-000000000000"])
def test_revoking_an_unknown_key_fails(runner: CliRunner, cli_env: Settings, key: str) -> None:
    result = invoke(runner, ["api-keys", "revoke", key])

    assert result.exit_code != 0
    assert f"no active key {key}" in result.output


def test_revoking_twice_fails_the_second_time(
    runner: CliRunner, cli_env: Settings, created_keys: list[str]
) -> None:
    _, secret = create_key(runner, created_keys, unique("cli-twice"), "sms:send")
    assert invoke(runner, ["api-keys", "revoke", secret[:12]]).exit_code == 0

    again = invoke(runner, ["api-keys", "revoke", secret[:12]])

    assert again.exit_code != 0
    assert "no active key" in again.output


def test_create_refuses_an_unknown_scope(
    runner: CliRunner, cli_env: Settings, database: str
) -> None:
    name = unique("cli-bad-scope")
    result = runner.invoke(cli, ["api-keys", "create", "--name", name, "--scope", "root"])

    assert result.exit_code == 2
    assert "root" in result.output
    assert _fetch(database, "SELECT id FROM api_keys WHERE name = :name", name=name) == []


def test_a_name_longer_than_100_characters_is_refused_with_a_message(
    runner: CliRunner, cli_env: Settings, database: str
) -> None:
    name = "n" * 101

    result = runner.invoke(cli, ["api-keys", "create", "--name", name, "--scope", "sms:send"])

    assert _fetch(database, "SELECT id FROM api_keys WHERE name = :name", name=name) == []
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), result.exception  # a message, no crash
    assert "100" in result.output


def test_without_a_database_url_the_cli_says_so(
    runner: CliRunner, cli_env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL")

    result = runner.invoke(cli, ["migrate"])

    assert result.exit_code != 0
    assert "DATABASE_URL is not set" in result.output


def test_migrate_on_a_migrated_database_is_a_no_op(
    runner: CliRunner, cli_env: Settings, database: str
) -> None:
    before = _fetch(database, "SELECT version_num FROM alembic_version")

    result = invoke(runner, ["migrate"])

    assert result.exit_code == 0, result.output
    assert _fetch(database, "SELECT version_num FROM alembic_version") == before
    assert len(before) == 1


# dev-token


def test_dev_token_signs_an_admin_token_the_api_accepts(
    runner: CliRunner, cli_env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = secrets.token_urlsafe(32)
    monkeypatch.setenv("JWT_SECRET", secret)

    admin = invoke(runner, ["dev-token", "alice", "--admin"])
    plain = invoke(runner, ["dev-token", "bob"])

    assert admin.exit_code == 0, admin.output
    assert plain.exit_code == 0, plain.output
    verifier = TokenVerifier(Settings(_env_file=None, jwt_secret=SecretStr(secret)))
    principal = verifier.verify(admin.stdout.strip())
    assert principal.kind == "user"
    assert principal.id == "alice"
    assert principal.is_admin
    bob = verifier.verify(plain.stdout.strip())
    assert bob.id == "bob"
    assert not bob.is_admin
    other = TokenVerifier(Settings(_env_file=None, jwt_secret=SecretStr(secret + "-other")))
    with pytest.raises(InvalidToken):
        other.verify(admin.stdout.strip())


def test_dev_token_is_refused_in_production(
    runner: CliRunner, cli_env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("PHONE_ENCRYPTION_KEYS", f"1:{key}")
    monkeypatch.setenv("PHONE_BLIND_INDEX_KEY", secrets.token_urlsafe(32))
    monkeypatch.setenv("JWT_SECRET", secrets.token_urlsafe(32))
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "0123456789abcdef" * 2)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "twilio-auth-token")
    monkeypatch.setenv("TWILIO_FROM_NUMBER", "+14155550100")
    assert Settings().app_env == "production"  # the settings load: only the command refuses

    result = runner.invoke(cli, ["dev-token", "alice", "--admin"])

    assert result.exit_code != 0
    assert "refused in production" in result.output
    assert "eyJ" not in result.output  # no JWT printed


# openapi


def test_openapi_matches_the_committed_file(runner: CliRunner, cli_env: Settings) -> None:
    result = invoke(runner, ["openapi"])

    assert result.exit_code == 0
    assert result.stdout == (PROJECT_ROOT / "openapi.yaml").read_text()


def test_openapi_can_write_to_a_file(runner: CliRunner, cli_env: Settings, tmp_path: Path) -> None:
    target = tmp_path / "out.yaml"

    result = invoke(runner, ["openapi", "--output", str(target)])

    assert result.exit_code == 0
    assert result.stdout == ""
    assert target.read_text() == (PROJECT_ROOT / "openapi.yaml").read_text()


# users erase


def _create_user(settings: Settings, external_id: str) -> uuid.UUID:
    async def create() -> uuid.UUID:
        engine = create_engine(settings)
        try:
            async with transaction(create_sessionmaker(engine)) as session:
                ids = await ensure_users(session, [external_id])
        finally:
            await engine.dispose()
        return ids[external_id]

    return asyncio.run(create())


def test_users_erase_removes_the_user_and_their_preferences(
    runner: CliRunner, cli_env: Settings, database: str
) -> None:
    external_id = unique("cli-erase")
    internal_id = _create_user(cli_env, external_id)
    try:
        prefs = "SELECT user_id FROM sms_preferences WHERE user_id = :id"
        assert len(_fetch(database, prefs, id=internal_id)) == 1

        result = invoke(runner, ["users", "erase", external_id])

        assert result.exit_code == 0, result.output
        assert result.output.strip() == f"erased {external_id}"
        users = "SELECT id FROM users WHERE external_id = :id"
        assert _fetch(database, users, id=external_id) == []
        assert _fetch(database, prefs, id=internal_id) == []
    finally:
        _fetch(database, "DELETE FROM users WHERE external_id = :id", id=external_id)


def test_users_erase_of_an_unknown_user_fails(runner: CliRunner, cli_env: Settings) -> None:
    external_id = unique("cli-nobody")

    result = invoke(runner, ["users", "erase", external_id])

    assert result.exit_code != 0
    assert f"no user `{external_id}`" in result.output
    assert "erased" not in result.output
