from __future__ import annotations

from app.core.errors import Conflict, Unprocessable


class IdempotencyKeyReused(Unprocessable):
    code, title = "idempotency_key_reused", "Idempotency key reused"


class IdempotencyKeyInFlight(Conflict):
    code, title = "idempotency_key_in_flight", "Request with this key in progress"
