"""ORM sessions, sync and asyncio, over the process's engines: committed in one place.

`expire_on_commit=False`: reading an expired attribute after commit would open a second
connection (and a second login through the pooler) just to reload it. The context managers
commit on success and roll back on error, so routes never call `commit()`. Read sessions run in
autocommit, refuse to flush, and Postgres refuses their writes too (`transaction_read_only`).
The asyncio engine needs greenlet, which only FastAPI functions ship: it is imported on use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from shared._engine import get_async_engine, get_engine
from shared._identity import Identity, acting_as

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

READ_ONLY_OPTIONS: dict[str, Any] = {"isolation_level": "AUTOCOMMIT", "postgresql_readonly": True}
"""Execution options of read sessions: no transaction, and writes refused by the server."""


# An engine's option view is a new engine object with its own event dispatch: made once per
# engine (the process has one of each; tests and SnapStart build new ones) rather than for
# every read. It shares its engine's pool, so it holds no connection of its own.
@lru_cache(maxsize=4)
def _read_only_engine(engine: Engine) -> Engine:
    return engine.execution_options(**READ_ONLY_OPTIONS)


@lru_cache(maxsize=4)
def _read_only_async_engine(engine: AsyncEngine) -> AsyncEngine:
    return engine.execution_options(**READ_ONLY_OPTIONS)


class ReadOnlySessionError(RuntimeError):
    """A change was flushed through a read session; write in `session_scope()` instead."""


class ReadSession(Session):
    """Refuses to flush changes: in autocommit, nothing would roll them back."""

    def flush(self, objects: Sequence[Any] | None = None) -> None:
        """Refuse pending changes, which would otherwise commit statement by statement."""
        if self.new or self.dirty or self.deleted:
            raise ReadOnlySessionError("read_session() cannot write: use session_scope()")
        super().flush(objects)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A read-write unit of work as the identity in scope: committed on success."""
    with Session(get_engine(), expire_on_commit=False) as session, session.begin():
        yield session


@contextmanager
def read_session() -> Iterator[Session]:
    """A read-only session in autocommit as the identity in scope."""
    with ReadSession(_read_only_engine(get_engine())) as session:
        yield session


@asynccontextmanager
async def async_session_scope(identity: Identity) -> AsyncIterator[AsyncSession]:
    """A read-write unit of work as `identity`, committed on success."""
    from sqlalchemy.ext.asyncio import AsyncSession

    with acting_as(identity):
        async with (
            AsyncSession(get_async_engine(), expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session


@asynccontextmanager
async def async_read_session(identity: Identity) -> AsyncIterator[AsyncSession]:
    """A read-only session in autocommit as `identity`."""
    from sqlalchemy.ext.asyncio import AsyncSession

    engine = _read_only_async_engine(get_async_engine())
    with acting_as(identity):
        async with AsyncSession(engine, sync_session_class=ReadSession) as session:
            yield session
