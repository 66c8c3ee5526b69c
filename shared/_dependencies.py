"""FastAPI dependencies: who a route acts as, and the session it reads or writes through.

A route says whom it acts as by the dependency it takes: `PublicReadSessionDep` (no token; reads
as `anon`), `UserDep` / `UserSessionDep` / `UserReadSessionDep` (a caller who names a user: 401
without a valid token, 403 for anon or a service_role token naming nobody), `ServiceRoleDep`
(service_role tokens only; open `async_session_scope(identity)` to act as it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from shared._identity import ANONYMOUS, Identity
from shared._sessions import async_read_session, async_session_scope
from shared._tokens import identity_from_authorization, service_role_only, user_only

# Declares the scheme in the OpenAPI document; the header itself is read as it was sent, so
# that a missing token and a non-Bearer one get the same answer as in plain handlers.
_bearer = HTTPBearer(auto_error=False, description="A Supabase Auth access token")


async def get_identity(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Identity:
    """The verified caller: a 401 without a valid Supabase access token.

    `async`: verification is CPU only, except for a JWKS fetch every few minutes per instance
    (bounded by the request's deadline), so it runs on the loop without a threadpool hop.
    """
    return identity_from_authorization(request.headers.get("authorization"))


async def get_service_role(identity: Annotated[Identity, Depends(get_identity)]) -> Identity:
    """The verified caller, who must hold a service_role token: 401 without one, 403 for others."""
    return service_role_only(identity)


IdentityDep = Annotated[Identity, Depends(get_identity)]
ServiceRoleDep = Annotated[Identity, Depends(get_service_role)]


async def get_public_read_session() -> AsyncIterator[AsyncSession]:
    """A read-only session in autocommit as `anon`: no token is read, so none is required."""
    async with async_read_session(ANONYMOUS) as session:
        yield session


# scope="function": commit before the response is sent, so a failed commit is what the client
# sees, never a success response for data that was not stored.
PublicReadSessionDep = Annotated[AsyncSession, Depends(get_public_read_session, scope="function")]


async def get_user(identity: IdentityDep) -> Identity:
    """The verified caller, who must name a user (`sub`): 401 without a valid token, 403 for an
    anon token and for a service_role token that names nobody."""
    return user_only(identity)


UserDep = Annotated[Identity, Depends(get_user)]


async def get_user_session(identity: UserDep) -> AsyncIterator[AsyncSession]:
    """A read-write unit of work as the verified caller, who must name a user: row-level
    security decides what it sees and changes."""
    async with async_session_scope(identity) as session:
        yield session


async def get_user_read_session(identity: UserDep) -> AsyncIterator[AsyncSession]:
    """A read-only session in autocommit as the verified caller, who must name a user."""
    async with async_read_session(identity) as session:
        yield session


# For per-user resources: a 403 with a clear message, before any database work, where the
# database would refuse anon's statements (no grant) or store a row with no owner.
UserSessionDep = Annotated[AsyncSession, Depends(get_user_session, scope="function")]
UserReadSessionDep = Annotated[AsyncSession, Depends(get_user_read_session, scope="function")]
