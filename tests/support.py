"""Helpers shared by several test modules."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import NullPool, make_url, text
from sqlalchemy.ext.asyncio import create_async_engine


@dataclass(frozen=True)
class RsaKeys:
    private_pem: bytes
    public_pem: str


def generate_rsa_keys() -> RsaKeys:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return RsaKeys(private_pem, public_pem.decode())


def run_sql(url: str, *statements: str, autocommit: bool = False) -> list[tuple[Any, ...]]:
    """Runs the statements from synchronous code (one transaction unless `autocommit`);
    returns the last one's rows."""

    async def run() -> list[tuple[Any, ...]]:
        isolation = "AUTOCOMMIT" if autocommit else "READ COMMITTED"
        engine = create_async_engine(url, poolclass=NullPool, isolation_level=isolation)
        try:
            async with engine.begin() as connection:
                rows: list[tuple[Any, ...]] = []
                for statement in statements:
                    result = await connection.execute(text(statement))
                    rows = [tuple(row) for row in result] if result.returns_rows else []
                return rows
        finally:
            await engine.dispose()

    return asyncio.run(run())


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def create_database(server_url: str, prefix: str) -> tuple[str, Callable[[], None]]:
    """A new empty database on the server of `server_url`: its URL, and how to drop it.
    Raises asyncpg.InsufficientPrivilegeError where the role may not create databases."""
    name = f"{prefix}_{secrets.token_hex(4)}"

    async def execute(statement: str) -> None:
        connection = await asyncpg.connect(asyncpg_dsn(server_url))
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(execute(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    return make_url(server_url).set(database=name).render_as_string(False), drop
