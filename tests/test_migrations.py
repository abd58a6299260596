"""The migrations build exactly the schema the models describe, and can be undone and redone."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.migrations import alembic_config, upgrade_to_head
from app.models import Base
from tests.support import run_sql

TABLES = set(Base.metadata.tables)


async def test_the_models_match_the_migrated_schema(engine: AsyncEngine) -> None:
    def differences(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, Base.metadata))

    async with engine.connect() as connection:
        diff = await connection.run_sync(differences)

    assert diff == []


def test_there_is_a_single_head() -> None:
    heads = ScriptDirectory.from_config(alembic_config("postgresql+asyncpg://unused")).get_heads()

    assert len(heads) == 1


def _tables(url: str) -> set[str]:
    rows = run_sql(
        url,
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    return {row[0] for row in rows}


def _version(url: str) -> list[str]:
    return [row[0] for row in run_sql(url, "SELECT version_num FROM alembic_version")]


@pytest.fixture
def fresh_database(database_url: str) -> Iterator[str]:
    """A new, empty database on the test server; dropped afterwards."""
    name = f"migrations_check_{secrets.token_hex(6)}"
    run_sql(database_url, f'CREATE DATABASE "{name}"', autocommit=True)
    try:
        yield make_url(database_url).set(database=name).render_as_string(hide_password=False)
    finally:
        run_sql(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', autocommit=True)


def test_upgrade_downgrade_and_upgrade_again_on_a_fresh_database(fresh_database: str) -> None:
    head = ScriptDirectory.from_config(alembic_config(fresh_database)).get_current_head()
    assert _tables(fresh_database) == set()

    upgrade_to_head(fresh_database)

    assert _tables(fresh_database) == {*TABLES, "alembic_version"}
    assert _version(fresh_database) == [head]

    command.downgrade(alembic_config(fresh_database), "base")

    assert _tables(fresh_database) == {"alembic_version"}
    assert _version(fresh_database) == []

    upgrade_to_head(fresh_database)

    assert _tables(fresh_database) == {*TABLES, "alembic_version"}
    assert _version(fresh_database) == [head]
    # The rebuilt schema works: a user with default preferences, removed by the cascade.
    rows = run_sql(
        fresh_database,
        "INSERT INTO users (id, external_id) VALUES (gen_random_uuid(), 'u1')",
        "INSERT INTO sms_preferences (user_id) SELECT id FROM users",
        "DELETE FROM users",
        "SELECT count(*) FROM sms_preferences",
    )
    assert rows == [(0,)]


def test_upgrading_twice_changes_nothing(fresh_database: str) -> None:
    upgrade_to_head(fresh_database)
    before = _version(fresh_database)

    upgrade_to_head(fresh_database)

    assert _version(fresh_database) == before
    assert _tables(fresh_database) == {*TABLES, "alembic_version"}
