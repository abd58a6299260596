"""Sending many messages at once, as the API's clients would."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from faults.harness import Scenario


def numbers(exchange: int, count: int, *, first_line: int = 0) -> list[str]:
    """Distinct San Francisco numbers of one exchange (200-999; a scenario takes its own)."""
    assert 200 <= exchange <= 999
    assert first_line + count <= 10_000
    return [f"+1415{exchange}{line:04d}" for line in range(first_line, first_line + count)]


def send_all(
    scenario: Scenario, to: Sequence[str], body: str, *, send_in: float | None = None
) -> list[dict[str, Any]]:
    """One /send per number, 8 at a time; every one must be accepted."""
    extra: dict[str, Any] = {}
    if send_in is not None:
        extra["send_at"] = (datetime.now(UTC) + timedelta(seconds=send_in)).isoformat()

    with scenario.client() as api:

        def send(number: str) -> dict[str, Any]:
            response = api.post("/api/sms/send", json={"to": number, "body": body, **extra})
            assert response.status_code == 202, response.text
            message: dict[str, Any] = response.json()
            return message

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(send, to))


def received(scenario: Scenario) -> int:
    return len(scenario.stack.all_sandbox_messages())


def post_retrying(client: httpx.Client, path: str, **kwargs: Any) -> httpx.Response:
    """Once; retried only on a dropped connection."""
    for _ in range(50):
        try:
            return client.post(path, **kwargs)
        except httpx.TransportError:
            continue
    return client.post(path, **kwargs)
