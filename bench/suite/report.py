"""One table: each figure beside its baseline from the same run and its SPEC target."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Row:
    scenario: str
    figure: str
    value: str
    baseline: str = ""  # the baseline measured in the same run, and the ratio to it
    target: str = ""  # SPEC section 10
    met: bool | None = None  # None: no target

    @property
    def verdict(self) -> str:
        return {True: "yes", False: "NO", None: ""}[self.met]


def ms(seconds: float | None) -> str:
    if seconds == float("inf"):
        return "overloaded"
    return "-" if seconds is None else f"{seconds * 1000:,.1f} ms"


def finite(seconds: float | None) -> float | None:
    """For JSON: an overloaded percentile (infinite) is null."""
    return None if seconds == float("inf") else seconds


def per_second(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}/s"


def ratio(value: float | None, baseline: float | None) -> str:
    if value is None or not baseline:
        return "-"
    return f"x{value / baseline:.2f}"


def render(rows: Sequence[Row]) -> str:
    headers = ("scenario", "figure", "value", "baseline (same run)", "SPEC target", "met")
    cells = [(r.scenario, r.figure, r.value, r.baseline, r.target, r.verdict) for r in rows]
    table = [headers, *cells]
    widths = [max(len(line[column]) for line in table) for column in range(len(headers))]
    lines = []
    for index, line in enumerate(table):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)
