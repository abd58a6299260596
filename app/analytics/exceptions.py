from __future__ import annotations

from app.core.errors import Unprocessable


class InvalidPeriod(Unprocessable):
    code, title = "invalid_period", "Invalid period"
