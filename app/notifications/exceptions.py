from __future__ import annotations

from app.core.errors import Unprocessable


class TooManyRecipients(Unprocessable):
    code, title = "too_many_recipients", "Too many recipients"
