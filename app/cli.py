"""Operators' command line: `python -m app.cli --help` (or the `sms-service` entry point)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
import jwt
import yaml
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import api_keys
from app.auth.principal import Scope
from app.core.database import create_engine, create_sessionmaker, transaction
from app.core.errors import ServiceError
from app.core.migrations import upgrade_to_head
from app.core.settings import Settings

T = TypeVar("T")


@asynccontextmanager
async def _session(settings: Settings) -> AsyncIterator[AsyncSession]:
    engine = create_engine(settings)
    try:
        async with transaction(create_sessionmaker(engine)) as session:
            yield session
    finally:
        await engine.dispose()


def _run_in_session(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async def run() -> T:
        async with _session(Settings()) as session:
            return await work(session)

    try:
        return asyncio.run(run())
    except ServiceError as error:
        raise click.ClickException(str(error.detail or error.title)) from error


@click.group()
def cli() -> None:
    """Operate the SMS service."""


@cli.command()
def migrate() -> None:
    """Apply the database migrations (alembic upgrade head)."""
    url = Settings().database_url
    if url is None:
        raise click.ClickException("DATABASE_URL is not set")
    upgrade_to_head(url)


@cli.group("api-keys")
def api_keys_group() -> None:
    """Create, list and revoke the API keys services call with."""


@api_keys_group.command("create")
@click.option("--name", required=True, help="Who uses the key, e.g. `booking-service`.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice([scope.value for scope in Scope]),
    help="Repeat for several scopes.",
)
def create_key(name: str, scopes: tuple[str, ...]) -> None:
    """Create a key; its secret is shown once and never again."""
    created = _run_in_session(
        lambda session: api_keys.create_key(session, name, [Scope(s) for s in scopes])
    )
    click.echo(f"id:     {created.key.id}\nname:   {created.key.name}")
    click.echo(f"scopes: {' '.join(created.key.scopes)}")
    click.echo(f"secret: {created.secret}\n(shown once: store it now)")


@api_keys_group.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
def list_keys(include_revoked: bool) -> None:
    """List keys (never their secrets)."""
    keys = _run_in_session(
        lambda session: api_keys.list_keys(session, include_revoked=include_revoked)
    )
    for key in keys:
        revoked = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
        used = f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never"
        click.echo(
            f"{key.id}  {key.prefix}…  {key.name}  [{' '.join(key.scopes)}]  "
            f"last used {used}  {revoked}"
        )


@api_keys_group.command("revoke")
@click.argument("key")
def revoke_key(key: str) -> None:
    """Revoke a key by id or by its shown prefix (`smsk_…`)."""
    revoked = _run_in_session(lambda session: api_keys.revoke_key(session, key))
    if not revoked:
        raise click.ClickException(f"no active key {key}")
    for item in revoked:
        click.echo(f"revoked {item.id} ({item.name})")


@cli.group("users")
def users_group() -> None:
    """Manage users."""


@users_group.command("erase")
@click.argument("user_id")
def erase_user(user_id: str) -> None:
    """Erase a user as DELETE /api/users/{user_id} does: profile, number, preferences, topics,
    bookings; their messages lose the user, number and body. Recorded as asked by `cli`."""
    from app.users.service import CLI_REQUESTER
    from app.users.service import erase_user as erase

    settings = Settings()
    _run_in_session(lambda session: erase(session, settings, user_id, requested_by=CLI_REQUESTER))
    click.echo(f"erased {user_id}")


@cli.command("dev-token")
@click.argument("user_id")
@click.option("--admin", is_flag=True, help="Give the user the admin claim.")
@click.option("--minutes", default=60, show_default=True, help="Lifetime of the token.")
def dev_token(user_id: str, admin: bool, minutes: int) -> None:
    """Sign an end-user JWT with JWT_SECRET, for trying the API (not in production)."""
    settings = Settings()
    if settings.app_env == "production":
        raise click.ClickException("dev-token is refused in production")
    if settings.jwt_secret is None:
        raise click.ClickException("JWT_SECRET is not set")
    claims: dict[str, Any] = {
        "sub": user_id,
        "exp": datetime.now(UTC) + timedelta(minutes=minutes),
    }
    if admin:
        claims[settings.jwt_admin_claim] = True
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    click.echo(jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256"))


@cli.command()
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
def openapi(output: Path | None) -> None:
    """Write the OpenAPI description (what openapi.yaml holds)."""
    text = render_openapi()
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)


def render_openapi() -> str:
    from app.main import create_app

    schema = create_app(Settings(_env_file=None)).openapi()
    return yaml.safe_dump(json.loads(json.dumps(schema)), sort_keys=False, allow_unicode=True)


@cli.command("worker-check")
@click.option("--timeout", default=10.0, show_default=True)
def worker_check(timeout: float) -> None:
    """Ask a worker to prove it runs and reaches the database."""
    from app.core.redis import create_redis

    async def check() -> Any:
        redis = await create_redis(Settings())
        try:
            job = await redis.enqueue_job("check_worker")
            assert job is not None
            return await job.result(timeout=timeout)
        finally:
            await redis.aclose()

    try:
        click.echo(json.dumps(asyncio.run(check())))
    except TimeoutError as error:
        raise click.ClickException(f"no worker answered within {timeout} s") from error
    except Exception as error:  # the job ran and failed: say why in one line
        raise click.ClickException(f"the worker failed the check: {error!r}") from error


@cli.group("retention")
def retention_group() -> None:
    """Message retention (the worker runs it daily at 03:17 UTC)."""


@retention_group.command("run")
@click.option("--dry-run", is_flag=True, help="Count what a run would do; change nothing.")
def run_retention(dry_run: bool) -> None:
    """Erase bodies past MESSAGE_BODY_RETENTION_DAYS, delete messages past
    MESSAGE_RETENTION_DAYS (their counts kept per day), in short batches."""
    from app.retention.service import Report, apply_retention

    settings = Settings()

    async def run() -> Report:
        engine = create_engine(settings)
        try:
            return await apply_retention(create_sessionmaker(engine), settings, dry_run=dry_run)
        finally:
            await engine.dispose()

    report = asyncio.run(run())
    if dry_run:
        click.echo("dry run: nothing was changed; a run now would do this")
    click.echo(f"bodies erased:             {report.bodies_erased}")
    click.echo(f"notification data erased:  {report.notification_data_erased}")
    click.echo(f"messages deleted:          {report.messages_deleted}")
    click.echo(f"days aggregated:           {report.days_aggregated}")
    click.echo(f"notifications deleted:     {report.notifications_deleted}")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
