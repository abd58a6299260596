"""The principal dependency: every authenticated route starts here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth import api_keys
from app.auth.exceptions import MissingScope, UserTokenRequired
from app.auth.principal import Principal, Scope
from app.auth.tokens import TokenVerifier
from app.core.deps import SessionmakerDep
from app.core.errors import Unauthenticated

_bearer = HTTPBearer(
    auto_error=False,
    description="A service API key (`smsk_…`) or an end user's JWT from the identity provider.",
)


async def get_principal(
    request: Request,
    sessionmaker: SessionmakerDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise Unauthenticated(
            "send `Authorization: Bearer <API key or JWT>`", code="missing_credentials"
        )
    token = credentials.credentials
    if api_keys.looks_like_api_key(token):
        keys = cast(api_keys.VerifiedKeys, request.state.api_keys)
        return await keys.authenticate(sessionmaker, token)
    verifier = cast(TokenVerifier, request.state.token_verifier)
    return verifier.verify(token)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def scope_checker(scope: Scope) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that lets the principal through only with `scope` (or as an admin)."""

    async def check(principal: CurrentPrincipal) -> Principal:
        if not principal.can(scope):
            raise MissingScope(f"this needs the `{scope.value}` scope or an admin")
        return principal

    return check


async def get_end_user(principal: CurrentPrincipal) -> Principal:
    if principal.kind != "user":
        raise UserTokenRequired(
            "this endpoint acts for the signed-in user: call it with the user's JWT, "
            "or use /api/users/{user_id} with a service key"
        )
    return principal


CurrentUser = Annotated[Principal, Depends(get_end_user)]
UserManager = Annotated[Principal, Depends(scope_checker(Scope.USERS_WRITE))]
