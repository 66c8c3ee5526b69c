"""psycopg, sending a transaction's settings in the same exchange as its first statement.

Behind a transaction-mode pooler nothing may outlive a transaction, so every transaction must
set its own `statement_timeout` (and, read-only sessions, `transaction_read_only`) with
transaction-local settings. Sent as statements of their own they would cost round trips: psycopg
sends BEGIN and waits for its answer, then SET LOCAL, then the statement, then COMMIT, four
exchanges for one INSERT. Here the first statement of each transaction travels in one pipeline
with what it needs, and the server answers them together:

- in a transaction: BEGIN, `SET LOCAL`, the statement; then COMMIT: 2 exchanges;
- in autocommit (single reads): `set_config(..., true)` and the statement share the implicit
  transaction that the protocol's Sync closes: 1 exchange, and the settings end with it.

With an identity in scope (`shared.identity.acting_as`), the same prelude also switches to the
identity's role and sets `request.jwt.claims`, which Supabase's `auth.uid()` and `auth.jwt()`
read, both with `set_config(..., true)`: transaction-local, so the next client of the server
connection starts as the login role with no claims. The claims travel as a bound parameter and
the role must be one of `shared.identity.ROLES`; nothing is spliced into SQL. The statement
timeout is set explicitly because `SET ROLE` does not apply the target role's own settings.
That prelude is one `SELECT`, so it takes the transaction's snapshot; a transaction that needs
`SET TRANSACTION` gets its isolation level from BEGIN instead (the connection's attribute).

To send BEGIN inside that pipeline, the connection stays in autocommit on the wire and
`autocommit` only records what SQLAlchemy asked for; `commit()` and `rollback()` act on the
server's transaction status, so they work unchanged.
https://www.psycopg.org/psycopg3/docs/advanced/pipeline.html
https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-PIPELINING
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, Self

import psycopg
from psycopg import pq, sql
from psycopg.abc import Params, Query, QueryNoTemplate

from shared.deadline import remaining_seconds
from shared.errors import CommitOutcomeUnknownError
from shared.identity import current_identity

__all__ = ["AsyncPoolerConnection", "PoolerConnection"]

_IDLE = pq.TransactionStatus.IDLE

type _AnyConnection = psycopg.Connection[Any] | psycopg.AsyncConnection[Any]


class _Transaction(Protocol):
    """What the sync and async connections share: how to start a transaction."""

    statement_timeout_ms: int
    wants_transaction: bool

    @property
    def isolation_level(self) -> psycopg.IsolationLevel | None: ...

    @property
    def read_only(self) -> bool | None: ...


def _begin(conn: _Transaction) -> sql.Composed | None:
    """BEGIN, unless SQLAlchemy asked for autocommit."""
    if not conn.wants_transaction:
        return None
    level = conn.isolation_level
    if level is None:
        return sql.Composed([sql.SQL("BEGIN")])
    return sql.SQL("BEGIN ISOLATION LEVEL {}").format(sql.SQL(level.name.replace("_", " ")))


def _limits(conn: _Transaction) -> dict[str, str]:
    """The transaction's statement timeout (within the invocation's deadline) and read-only."""
    settings: dict[str, str] = {}
    timeout_ms = conn.statement_timeout_ms
    left = remaining_seconds()
    if left is not None:
        # The server never works past the invocation's deadline.
        left_ms = max(1, int(left * 1000))
        timeout_ms = min(timeout_ms, left_ms) if timeout_ms else left_ms
    if timeout_ms:
        settings["statement_timeout"] = str(timeout_ms)
    if conn.read_only:
        settings["transaction_read_only"] = "on"
    return settings


def _prelude(conn: _Transaction) -> list[tuple[sql.Composed, list[str]]]:
    """The statements that set this transaction's limits and identity, sent before its first.

    In a transaction with no identity, `SET LOCAL`: it takes no snapshot, so `SET TRANSACTION
    ISOLATION LEVEL` may still follow. Otherwise one `SELECT set_config(..., true)` with every
    value bound: the claims cannot go through `SET`, which takes no parameters, and in
    autocommit `SET LOCAL` outside a BEGIN would warn, although the protocol's implicit
    transaction keeps its settings until the Sync.
    """
    settings = _limits(conn)
    identity = current_identity()
    if identity is None and conn.wants_transaction:
        return [
            (sql.SQL("SET LOCAL {} = {}").format(sql.SQL(name), sql.Literal(value)), [])
            for name, value in settings.items()
        ]
    if identity is not None:
        settings["role"] = identity.role
        settings["request.jwt.claims"] = identity.claims_json()
    if not settings:
        return []
    calls = sql.SQL(", ").join(
        sql.SQL("set_config({}, %s, true)").format(sql.Literal(name)) for name in settings
    )
    return [(sql.SQL("SELECT {}").format(calls), list(settings.values()))]


@contextmanager
def _commit_outcome(conn: _AnyConnection) -> Iterator[None]:
    """Tell a connection lost during COMMIT apart: nobody knows whether the change is stored."""
    try:
        yield
    except psycopg.OperationalError as exc:
        if conn.broken or conn.closed:
            raise CommitOutcomeUnknownError("connection lost during COMMIT") from exc
        raise


@contextmanager
def _discard_if_stuck(conn: _AnyConnection) -> Iterator[None]:
    """Close a connection that a failure left in pipeline mode: nothing more can be sent on it.

    A closed connection is what SQLAlchemy recognises as a disconnect: it discards it instead of
    trying a ROLLBACK that could not be sent either.
    """
    try:
        yield
    except psycopg.Error:
        if conn.pgconn.pipeline_status != pq.PipelineStatus.OFF:
            conn.pgconn.finish()
        raise


class _WireAutocommit:
    """`autocommit` as SQLAlchemy sets it, while the connection stays in autocommit on the wire."""

    statement_timeout_ms = 0
    wants_transaction = True

    @property
    def autocommit(self) -> bool:
        """What SQLAlchemy asked for; the wire stays in autocommit."""
        return not self.wants_transaction

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        self.wants_transaction = not value


class PoolerConnection(_WireAutocommit, psycopg.Connection[Any]):
    """A connection whose cursors pipeline BEGIN and the settings with the first statement."""

    @classmethod
    def open(cls, statement_timeout_ms: int, **params: Any) -> PoolerConnection:
        """Connect in autocommit on the wire, with these settings for every transaction."""
        conn = cls.connect(autocommit=True, cursor_factory=PoolerCursor, **params)
        conn.statement_timeout_ms = statement_timeout_ms
        return conn

    def set_autocommit(self, value: bool) -> None:
        """Method version of the `autocommit` setter."""
        self.wants_transaction = not value

    def commit(self) -> None:
        """COMMIT, telling a lost connection during it apart from any other failure."""
        with _commit_outcome(self):
            super().commit()

    def start(self, cursor: psycopg.Cursor[Any]) -> None:
        """Queue BEGIN and the settings in the pipeline that `cursor` is about to use."""
        if begin := _begin(self):
            cursor.execute(begin)
        for statement, params in _prelude(self):
            cursor.execute(statement, params or None)


class PoolerCursor(psycopg.Cursor[Any]):
    """Starts each transaction in the same exchange as its first statement."""

    def execute(  # type: ignore[override]
        self, query: QueryNoTemplate, params: Params | None = None, **kwargs: Any
    ) -> Self:
        conn = self.connection
        if not isinstance(conn, PoolerConnection) or conn.info.transaction_status != _IDLE:
            return super().execute(query, params, **kwargs)
        with _discard_if_stuck(conn), conn.pipeline():
            conn.start(psycopg.Cursor(conn))
            super().execute(query, params, **kwargs)
        return self

    def executemany(
        self, query: Query, params_seq: Iterable[Params], *, returning: bool = False
    ) -> None:
        conn = self.connection
        if not isinstance(conn, PoolerConnection) or conn.info.transaction_status != _IDLE:
            return super().executemany(query, params_seq, returning=returning)
        with _discard_if_stuck(conn), conn.pipeline():
            conn.start(psycopg.Cursor(conn))
            super().executemany(query, params_seq, returning=returning)
        return None


class AsyncPoolerConnection(_WireAutocommit, psycopg.AsyncConnection[Any]):
    """The asyncio twin of `PoolerConnection`, for SQLAlchemy's asyncio engine."""

    @classmethod
    async def open(cls, statement_timeout_ms: int, **params: Any) -> AsyncPoolerConnection:
        """Connect in autocommit on the wire, with these settings for every transaction."""
        conn = await cls.connect(autocommit=True, cursor_factory=AsyncPoolerCursor, **params)
        conn.statement_timeout_ms = statement_timeout_ms
        return conn

    async def set_autocommit(self, value: bool) -> None:
        """Method version of the `autocommit` setter."""
        self.wants_transaction = not value

    async def commit(self) -> None:
        """COMMIT, telling a lost connection during it apart from any other failure."""
        with _commit_outcome(self):
            await super().commit()

    async def start(self, cursor: psycopg.AsyncCursor[Any]) -> None:
        """Queue BEGIN and the settings in the pipeline that `cursor` is about to use."""
        if begin := _begin(self):
            await cursor.execute(begin)
        for statement, params in _prelude(self):
            await cursor.execute(statement, params or None)


class AsyncPoolerCursor(psycopg.AsyncCursor[Any]):
    """Starts each transaction in the same exchange as its first statement."""

    async def execute(  # type: ignore[override]
        self, query: QueryNoTemplate, params: Params | None = None, **kwargs: Any
    ) -> Self:
        conn = self.connection
        if not isinstance(conn, AsyncPoolerConnection) or conn.info.transaction_status != _IDLE:
            return await super().execute(query, params, **kwargs)
        with _discard_if_stuck(conn):
            async with conn.pipeline():
                await conn.start(psycopg.AsyncCursor(conn))
                await super().execute(query, params, **kwargs)
        return self
