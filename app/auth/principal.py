"""Who is calling: a service holding an API key, or an end user holding a JWT."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class Scope(StrEnum):
    SMS_SEND = "sms:send"
    SMS_BULK = "sms:bulk"
    SMS_READ = "sms:read"
    USERS_WRITE = "users:write"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    kind: Literal["api_key", "user"]
    id: str
    """The API key's id, or the user's id (the JWT's `sub`)."""
    name: str
    scopes: frozenset[Scope]

    @property
    def is_admin(self) -> bool:
        return Scope.ADMIN in self.scopes

    def can(self, scope: Scope) -> bool:
        return self.is_admin or scope in self.scopes
