"""Asyncio ORM sessions for FastAPI functions, with the rules of `shared.sessions`.

`async def` routes with these sessions run on the event loop: no worker thread per request, and
still correct under any ASGI server, because the database calls never block the loop. The
asyncio extension needs greenlet, which only the FastAPI functions ship, so plain handlers never
import this module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import get_async_engine
from shared.sessions import READ_ONLY_OPTIONS, ReadSession

__all__ = ["get_async_read_session", "get_async_session"]


async def get_async_session() -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: a read-write unit of work, committed on success, else rolled back."""
    async with (
        AsyncSession(get_async_engine(), expire_on_commit=False) as session,
        session.begin(),
    ):
        yield session


async def get_async_read_session() -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: a read-only session in autocommit, for routes that only read."""
    engine = get_async_engine().execution_options(**READ_ONLY_OPTIONS)
    async with AsyncSession(engine, sync_session_class=ReadSession) as session:
        yield session
