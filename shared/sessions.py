"""ORM sessions over the one engine: one connection per request, committed in one place.

`expire_on_commit=False` because reading an attribute of an expired object after commit
opens a second connection (and a second login through the pooler) just to reload it. The
context managers commit on success and roll back on error, so routes never call `commit()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from shared.db import get_engine

__all__ = ["get_read_session", "get_session", "read_session", "session_scope"]


@contextmanager
def session_scope() -> Iterator[Session]:
    """A read-write unit of work: committed on success, rolled back on any error."""
    with Session(get_engine(), expire_on_commit=False) as session, session.begin():
        yield session


@contextmanager
def read_session() -> Iterator[Session]:
    """A session in autocommit, for requests that run a single SELECT: no BEGIN/COMMIT."""
    autocommit = get_engine().execution_options(isolation_level="AUTOCOMMIT")
    with Session(autocommit, expire_on_commit=False) as session:
        yield session


def get_session() -> Iterator[Session]:
    """FastAPI dependency for `session_scope`."""
    with session_scope() as session:
        yield session


def get_read_session() -> Iterator[Session]:
    """FastAPI dependency for `read_session`."""
    with read_session() as session:
        yield session
