from __future__ import annotations

from app.core.errors import FieldError, NotFound, Unprocessable
from app.core.phone import InvalidPhoneNumber


class UserNotFound(NotFound):
    code = "user_not_found"

    def __init__(self, user_id: str) -> None:
        super().__init__(f"no user `{user_id}`")


class ErasureNotFound(NotFound):
    code = "erasure_not_found"


class InvalidPhoneNumberError(Unprocessable):
    code, title = "invalid_phone_number", "Invalid phone number"

    def __init__(self, error: InvalidPhoneNumber, field: str = "body.phone_number") -> None:
        super().__init__(
            error.reason,
            errors=[FieldError(field=field, message=error.reason, type=error.reason_code)],
        )
