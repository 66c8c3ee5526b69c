"""ORM sessions over the one engine: one connection per request, committed in one place.

`expire_on_commit=False` because reading an attribute of an expired object after commit
opens a second connection (and a second login through the pooler) just to reload it. The
context managers commit on success and roll back on error, so routes never call `commit()`.

Read sessions run in autocommit (one exchange per SELECT, no BEGIN/COMMIT) and read-only twice
over: flushing a change raises `ReadOnlySessionError`, and Postgres itself refuses any write
statement (`transaction_read_only`, set in the same exchange by `shared.driver`).

Sessions act as the identity in scope (`shared.identity`): `anon` unless a block says
otherwise. A plain handler that reads a user's data runs them inside
`acting_as(require_identity(event))`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session

from shared.db import get_engine

__all__ = [
    "READ_ONLY_OPTIONS",
    "ReadOnlySessionError",
    "ReadSession",
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


@contextmanager
def session_scope() -> Iterator[Session]:
    """A read-write unit of work: committed on success, rolled back on any error."""
    with Session(get_engine(), expire_on_commit=False) as session, session.begin():
        yield session


@contextmanager
def read_session() -> Iterator[Session]:
    """A read-only session in autocommit, for requests that only read."""
    with ReadSession(get_engine().execution_options(**READ_ONLY_OPTIONS)) as session:
        yield session
