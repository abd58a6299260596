"""The two invariants, over every message a scenario's service accepted: each ends in a final
status, and the sandbox received it at most once (exactly once when it was delivered).

Messages are matched to what the sandbox received by (number, body): each scenario gives
every message of its own a distinct pair."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import httpx

from app.core.crypto import PhoneCipher
from app.core.settings import Settings
from app.messages.status import FINAL

Key = tuple[str, str]  # (number, body)


@dataclass(frozen=True, slots=True)
class Figures:
    scenario: str
    accepted: int
    delivered: int
    duplicates: int
    lost: int
    recover_seconds: float
    statuses: dict[str, int]

    def line(self) -> str:
        others = ", ".join(f"{status} {count}" for status, count in sorted(self.statuses.items()))
        return (
            f"{self.scenario}: accepted {self.accepted}, delivered {self.delivered}, "
            f"duplicates {self.duplicates}, lost {self.lost}, "
            f"recovered in {self.recover_seconds:.1f} s ({others})"
        )


@dataclass(frozen=True, slots=True)
class Row:
    id: str
    status: str
    twilio_sid: str | None
    key: Key


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


class Ledger:
    """Reads the scenario's messages from PostgreSQL (a new connection each time: the server
    may have restarted) and what the sandbox received."""

    def __init__(self, database_url: str, sandbox_url: str) -> None:
        self.database_url = database_url
        self.sandbox_url = sandbox_url
        settings = Settings(_env_file=None)
        self._cipher = PhoneCipher(
            settings.phone_keys, settings.phone_blind_index_key.get_secret_value().encode()
        )

    def _query(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async def run() -> list[asyncpg.Record]:
            connection = await asyncpg.connect(asyncpg_dsn(self.database_url), timeout=5)
            try:
                rows: list[asyncpg.Record] = await connection.fetch(sql, *args)
                return rows
            finally:
                await connection.close()

        return asyncio.run(run())

    def now(self) -> datetime:
        """The database's clock: what `created_at` is compared with."""
        moment: datetime = self._query("SELECT now() AS now")[0]["now"]
        return moment

    def pending(self, since: datetime) -> int:
        rows = self._query(
            "SELECT count(*) AS n FROM messages WHERE created_at >= $1 AND NOT status = ANY($2)",
            since,
            [str(status) for status in FINAL],
        )
        return int(rows[0]["n"])

    def rows(self, since: datetime) -> list[Row]:
        found = self._query(
            "SELECT id, status, twilio_sid, to_encrypted, body FROM messages"
            " WHERE created_at >= $1",
            since,
        )
        return [
            Row(
                str(row["id"]),
                row["status"],
                row["twilio_sid"],
                (self._cipher.decrypt(row["to_encrypted"]), row["body"] or ""),
            )
            for row in found
        ]

    def received(self) -> Counter[Key]:
        response = httpx.get(f"{self.sandbox_url}/sandbox/messages", timeout=30)
        response.raise_for_status()
        messages = response.json()["messages"]
        return Counter((message["to"], message["body"]) for message in messages)

    def settle(self, since: datetime, *, timeout: float) -> float:
        """Seconds until every message since `since` is final (or the timeout ran out)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                if self.pending(since) == 0:
                    break
            except (OSError, asyncpg.PostgresError):
                pass  # the server is coming back
            time.sleep(0.25)
        return time.monotonic() - started

    def figures(self, scenario: str, since: datetime, recover_seconds: float) -> Figures:
        rows = self.rows(since)
        keys = Counter(row.key for row in rows)
        assert max(keys.values(), default=1) == 1, "the scenario gave two messages one key"
        received = self.received()
        statuses = Counter(row.status for row in rows)
        duplicates = sum(max(0, received[row.key] - 1) for row in rows)
        lost = sum(
            row.status not in FINAL or (row.status == "delivered" and received[row.key] != 1)
            for row in rows
        )
        strays = set(received) - set(keys)
        assert not strays, f"the sandbox received messages nobody accepted: {sorted(strays)[:5]}"
        return Figures(
            scenario=scenario,
            accepted=len(rows),
            delivered=statuses.get("delivered", 0),
            duplicates=duplicates,
            lost=lost,
            recover_seconds=recover_seconds,
            statuses={s: n for s, n in statuses.items() if s != "delivered"},
        )
