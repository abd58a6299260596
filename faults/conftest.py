"""The suite's own servers (never the machine's shared ones: scenarios restart and flush
them), and the figures of every scenario printed at the end of the run."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from _pytest.terminal import TerminalReporter

from faults.harness import REPORTED, Servers
from faults.servers import OwnPostgres, OwnRedis


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    # Not under pytest's temporary folder: any pytest started meanwhile on the machine makes
    # that private to its user again, and PostgreSQL (run as another user under root) dies.
    postgres_root = Path(tempfile.mkdtemp(prefix="sms-faults-pg-"))
    postgres = OwnPostgres(postgres_root / "data")
    redis = OwnRedis(tmp_path_factory.mktemp("redis"))
    postgres.start()
    try:
        redis.start()
        try:
            yield Servers(postgres, redis)
        finally:
            redis.stop()
    finally:
        postgres.keep_log(tmp_path_factory.getbasetemp() / "postgres.log")
        postgres.stop()
        shutil.rmtree(postgres_root, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    if REPORTED:
        terminalreporter.section("fault scenarios")
        for figures in REPORTED:
            terminalreporter.write_line(figures.line())
