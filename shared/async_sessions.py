"""Asyncio ORM sessions for FastAPI functions, with the rules of `shared.sessions`.

`async def` routes with these sessions run on the event loop: no worker thread per request, and
still correct under any ASGI server, because the database calls never block the loop. The
asyncio extension needs greenlet, which only the FastAPI functions ship, so plain handlers never
import this module.

Every session acts as an identity (`shared.identity`): each of its transactions switches to the
identity's role and claims, so row-level security decides what it sees. The context managers
take the identity to act as; the FastAPI dependencies act as the identity the request put in
scope (`acting_as`) and, as user sessions (`shared.sessions.UserSession`), refuse to reach the
database without one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from shared.db import get_async_engine
from shared.identity import Identity, acting_as
from shared.sessions import READ_ONLY_OPTIONS, ReadSession, UserReadSession, UserSession

__all__ = [
    "async_read_session",
    "async_session_scope",
    "get_async_read_session",
    "get_async_session",
]


@asynccontextmanager
async def async_session_scope(identity: Identity | None) -> AsyncIterator[AsyncSession]:
    """A read-write unit of work as `identity` (None: the login role), committed on success."""
    with acting_as(identity):
        async with _read_write_session(Session) as session:
            yield session


@asynccontextmanager
async def async_read_session(identity: Identity | None) -> AsyncIterator[AsyncSession]:
    """A read-only session in autocommit as `identity` (None: the login role)."""
    with acting_as(identity):
        async with _read_only_session(ReadSession) as session:
            yield session


async def get_async_session() -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: a read-write unit of work as the identity the request put in scope."""
    async with _read_write_session(UserSession) as session:
        yield session


async def get_async_read_session() -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: a read-only session in autocommit as the request's identity."""
    async with _read_only_session(UserReadSession) as session:
        yield session


@asynccontextmanager
async def _read_write_session(session_class: type[Session]) -> AsyncIterator[AsyncSession]:
    async with (
        AsyncSession(
            get_async_engine(), expire_on_commit=False, sync_session_class=session_class
        ) as session,
        session.begin(),
    ):
        yield session


@asynccontextmanager
async def _read_only_session(session_class: type[ReadSession]) -> AsyncIterator[AsyncSession]:
    engine = get_async_engine().execution_options(**READ_ONLY_OPTIONS)
    async with AsyncSession(engine, sync_session_class=session_class) as session:
        yield session
