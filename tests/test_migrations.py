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
from sqlalchemy import Connection, make_url, text
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


def _index_definitions(url: str) -> dict[str, str]:
    rows = run_sql(url, "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'")
    return {str(name): str(definition) for name, definition in rows}


async def test_partial_indexes_are_partial_in_the_database_too(engine: AsyncEngine) -> None:
    """compare_metadata does not compare an index's WHERE: this does, for every table."""
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT indexname, indexdef FROM pg_indexes"))
        built = {str(name): str(definition) for name, definition in rows}
    for table in Base.metadata.sorted_tables:
        for index in table.indexes:
            assert index.name is not None
            where = index.dialect_options["postgresql"]["where"]
            assert ("WHERE" in built[index.name]) == (where is not None), built[index.name]
    sid_index = built["uq_messages_twilio_sid"]
    assert sid_index.startswith("CREATE UNIQUE INDEX")
    assert sid_index.endswith("WHERE (twilio_sid IS NOT NULL)")


def test_the_sparse_indexes_migration_runs_again_after_a_failed_build(
    fresh_database: str,
) -> None:
    """A concurrent build that failed leaves an invalid `_new` index and maybe some indexes
    already swapped: running the migration again finishes the job."""
    command.upgrade(alembic_config(fresh_database), "0008_campaigns")
    run_sql(
        fresh_database,
        # The swap of the first index done, the second's build interrupted.
        "DROP INDEX ix_messages_user_created",
        "CREATE INDEX ix_messages_user_created ON messages (user_id, created_at) "
        "WHERE user_id IS NOT NULL",
        "CREATE INDEX ix_messages_reference_new ON messages (reference)",
    )

    upgrade_to_head(fresh_database)

    built = _index_definitions(fresh_database)
    assert not [name for name in built if name.endswith("_new")]
    for name, column in (
        ("ix_messages_user_created", "user_id"),
        ("ix_messages_reference", "reference"),
        ("ix_messages_notification_id", "notification_id"),
        ("uq_messages_twilio_sid", "twilio_sid"),
    ):
        assert built[name].endswith(f"WHERE ({column} IS NOT NULL)"), built[name]
