from __future__ import annotations

from app.core.errors import NotFound


class NotSubscribed(NotFound):
    code = "not_subscribed"
