"""RUN: `python -m app.localdev` (what `make run` calls).

Starts PostgreSQL and Redis from pip packages unless DATABASE_URL / REDIS_URL are set, applies
the migrations, then serves the API and runs a worker beside it until interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from app.core.migrations import upgrade_to_head
from app.core.settings import Settings
from app.localdev.servers import LocalServer, start_postgres, start_redis


def main() -> int:
    # The environment and .env, but not .data/local.env: that file only echoes the last run.
    settings = Settings(_env_file=".env")
    data_dir = Path(settings.local_data_dir)
    host = os.environ.get("HOST", "127.0.0.1")
    port = os.environ.get("PORT", "8000")
    servers: list[LocalServer] = []
    children: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ)
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    if "public_base_url" not in settings.model_fields_set:
        # The mounted Twilio sandbox calls back here, and the worker calls it here.
        env["PUBLIC_BASE_URL"] = f"http://{host}:{port}"

    def stop_everything() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
        for server in reversed(servers):
            server.stop()

    def on_signal(signum: int, _: FrameType | None) -> None:
        # From here on, a second Ctrl-C or TERM must not cut the clean shutdown short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if not env.get("DATABASE_URL"):
            servers.append(start_postgres(data_dir / "postgres"))
            env["DATABASE_URL"] = servers[-1].url
            print(f"PostgreSQL (embedded) data in {data_dir / 'postgres'}", flush=True)
        if not env.get("REDIS_URL"):
            servers.append(start_redis(data_dir / "redis"))
            env["REDIS_URL"] = servers[-1].url
            print(f"Redis (embedded) data in {data_dir / 'redis'}", flush=True)
        _write_local_env(data_dir, env)
        upgrade_to_head(env["DATABASE_URL"])
        python = sys.executable
        children.append(
            subprocess.Popen(  # noqa: S603
                [python, "-m", "uvicorn", "app.main:app", "--host", host, "--port", port],
                env=env,
            )
        )
        children.append(
            subprocess.Popen([python, "-m", "arq", "app.worker.WorkerSettings"], env=env)  # noqa: S603
        )
        print(
            f"\nAPI on http://{host}:{port}  (docs: http://{host}:{port}/docs)\n"
            "A token for a test user:  .venv/bin/sms-service dev-token alice\n"
            "An API key for a service: .venv/bin/sms-service api-keys create --name me "
            "--scope admin\n",
            flush=True,
        )
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        print("a process stopped; shutting down", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop_everything()


def _write_local_env(data_dir: Path, env: dict[str, str]) -> None:
    """Lets the CLI, run from another terminal, find the embedded servers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"{name}={env[name]}" for name in ("DATABASE_URL", "REDIS_URL")]
    (data_dir / "local.env").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
