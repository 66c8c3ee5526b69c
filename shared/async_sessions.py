"""Asyncio ORM sessions for FastAPI functions, with the rules of `shared.sessions`.

`async def` routes with these sessions run on the event loop: no worker thread per request, and
still correct under any ASGI server, because the database calls never block the loop. The
asyncio extension needs greenlet, which only the FastAPI functions ship, so plain handlers never
import this module.

Every session acts as an identity (`shared.identity`): each of its transactions switches to the
identity's role and claims, so row-level security decides what it sees. `shared.api`'s session
dependencies open them as the request's verified caller, or as `anon` for public routes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import get_async_engine
from shared.identity import Identity, acting_as
from shared.sessions import READ_ONLY_OPTIONS, ReadSession

__all__ = ["async_read_session", "async_session_scope"]


@asynccontextmanager
async def async_session_scope(identity: Identity) -> AsyncIterator[AsyncSession]:
    """A read-write unit of work as `identity`, committed on success."""
    with acting_as(identity):
        async with (
            AsyncSession(get_async_engine(), expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session


@asynccontextmanager
async def async_read_session(identity: Identity) -> AsyncIterator[AsyncSession]:
    """A read-only session in autocommit as `identity`."""
    engine = get_async_engine().execution_options(**READ_ONLY_OPTIONS)
    with acting_as(identity):
        async with AsyncSession(engine, sync_session_class=ReadSession) as session:
            yield session
