"""SQLAlchemy 2 async on asyncpg: the declarative base, engine and session factories."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import DateTime, MetaData, cast, column, event, func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeEngine

from app.core.settings import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class TimestampMixin:
    # Fetch server-set timestamps in the same statement (RETURNING): async code cannot lazy-load.
    __mapper_args__: ClassVar[dict[str, Any]] = {"eager_defaults": True}

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class DatabaseNotConfigured(RuntimeError):
    pass


def create_engine(settings: Settings) -> AsyncEngine:
    if settings.database_url is None:
        raise DatabaseNotConfigured(
            "DATABASE_URL is not set: export it, or start everything with `make run`"
        )
    engine = create_async_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        # Errors must not carry bound values into logs: bodies and ciphertexts live there.
        hide_parameters=True,
    )
    event.listen(engine.sync_engine, "checkout", _refuse_closed_connection)
    return engine


def _refuse_closed_connection(_: Any, record: ConnectionPoolEntry, __: Any) -> None:
    """A pooled connection the server closed (a restart, an idle timeout) is replaced at
    checkout: asyncpg has already seen its socket close. Instead of `pool_pre_ping`, whose
    round trip per checkout was a sixth of the CPU of a POST /api/sms/send."""
    connection = record.driver_connection
    if connection is None or connection.is_closed():
        raise DisconnectionError("the server closed this connection")


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """The one place work is committed: on success; anything raised rolls it all back."""
    async with sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()


def values_of(name: str, **arrays: tuple[Sequence[object], TypeEngine[Any]]) -> Any:
    """unnest(array, ...) AS name(column, ...): a row per item, each column from one array, to
    join in one statement (an UPDATE ... FROM) what would be a statement per item."""
    return (
        func.unnest(*(cast(list(values), ARRAY(kind)) for values, kind in arrays.values()))
        .table_valued(*(column(key, kind) for key, (_, kind) in arrays.items()))
        .render_derived(name=name)
    )
