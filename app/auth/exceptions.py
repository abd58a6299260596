from __future__ import annotations

from app.core.errors import Forbidden, Unauthenticated, Unprocessable


class InvalidToken(Unauthenticated):
    code = "invalid_token"


class InvalidApiKey(Unauthenticated):
    code = "invalid_api_key"


class MissingScope(Forbidden):
    code = "missing_scope"


class UserTokenRequired(Forbidden):
    code = "user_token_required"


class InvalidKeyName(Unprocessable):
    code = "invalid_key_name"
