"""Small helpers about time shared by the scenarios."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime


def epoch(value: str) -> float:
    """The sandbox's ISO 8601 times (with microseconds) as seconds since the epoch."""
    return datetime.fromisoformat(value).timestamp()


def wait_for(check: Callable[[], bool], *, timeout: float, what: str, every: float = 0.2) -> float:
    """Seconds until `check()` held; raises after `timeout`."""
    began = time.perf_counter()
    while not check():
        if time.perf_counter() - began > timeout:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)
    return time.perf_counter() - began
