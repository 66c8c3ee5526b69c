"""ORM sessions over the one engine: one connection per request, committed in one place.

`expire_on_commit=False` because reading an attribute of an expired object after commit
opens a second connection (and a second login through the pooler) just to reload it. The
context managers commit on success and roll back on error, so routes never call `commit()`.

Read sessions run in autocommit (one exchange per SELECT, no BEGIN/COMMIT) and read-only twice
over: flushing a change raises `ReadOnlySessionError`, and Postgres itself refuses any write
statement (`transaction_read_only`, set in the same exchange by `shared.driver`).

Sessions act as the identity in scope (`shared.identity.acting_as`), or as the login role when
there is none. The FastAPI dependencies give user sessions (`UserSession`, `UserReadSession`),
which refuse to reach the database with no identity in scope (`IdentityRequiredError`, a 500):
a route that forgot to say whom it acts for fails closed instead of running as the login role,
which may see every user's rows. The check runs when the session first needs a connection, so
a request with invalid input still gets its 4xx.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, event
from sqlalchemy.orm import Session, SessionTransaction

from shared.db import get_engine
from shared.identity import required_identity

__all__ = [
    "READ_ONLY_OPTIONS",
    "ReadOnlySessionError",
    "ReadSession",
    "UserReadSession",
    "UserSession",
    "get_read_session",
    "get_session",
    "read_session",
    "session_scope",
]

READ_ONLY_OPTIONS: dict[str, Any] = {"isolation_level": "AUTOCOMMIT", "postgresql_readonly": True}
"""Execution options of read sessions: no transaction, and writes refused by the server."""


class ReadOnlySessionError(RuntimeError):
    """A change was flushed through a read session; write in `session_scope()` instead."""


class ReadSession(Session):
    """Refuses to flush changes: in autocommit, nothing would roll them back."""

    def flush(self, objects: Sequence[Any] | None = None) -> None:
        """Refuse pending changes, which would otherwise commit statement by statement."""
        if self.new or self.dirty or self.deleted:
            raise ReadOnlySessionError("read_session() cannot write: use session_scope()")
        super().flush(objects)


class UserSession(Session):
    """A session for users' data: no connection, so no statement, without an identity."""


class UserReadSession(UserSession, ReadSession):
    """A read session for users' data."""


@event.listens_for(UserSession, "after_begin")
def _refuse_without_an_identity(
    _session: Session, _transaction: SessionTransaction, _connection: Connection
) -> None:
    # The driver sends BEGIN with the first statement, so nothing has reached the server yet.
    required_identity()


@contextmanager
def session_scope(session_class: type[Session] = Session) -> Iterator[Session]:
    """A read-write unit of work: committed on success, rolled back on any error."""
    with session_class(get_engine(), expire_on_commit=False) as session, session.begin():
        yield session


@contextmanager
def read_session(session_class: type[ReadSession] = ReadSession) -> Iterator[Session]:
    """A read-only session in autocommit, for requests that only read."""
    with session_class(get_engine().execution_options(**READ_ONLY_OPTIONS)) as session:
        yield session


def get_session() -> Iterator[Session]:
    """FastAPI dependency: `session_scope` for users' data, as the identity in scope."""
    with session_scope(UserSession) as session:
        yield session


def get_read_session() -> Iterator[Session]:
    """FastAPI dependency: `read_session` for users' data, as the identity in scope."""
    with read_session(UserReadSession) as session:
        yield session
