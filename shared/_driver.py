"""psycopg, starting every transaction with its settings, whichever way a statement arrives.

Behind a transaction-mode pooler every transaction must set its own `statement_timeout`, role
and JWT claims (`request.jwt.claims`, read by Supabase's `auth.uid()`), transaction-locally,
or they leak to the next client of the server connection. Sent as statements of their own they
cost round trips, so the first statement of each transaction travels in one pipeline with BEGIN
and that prelude: a write is 2 exchanges, a read in autocommit 1. The role must be one of
`shared._identity.ROLES`, and the claims travel as bound parameters: nothing is spliced into SQL.

The one way in is psycopg's `_start_query()`, which every cursor operation (`execute`,
`executemany`, `stream`, `copy`, server-side cursors), sync and async, calls first; what cannot
be pipelined gets the prelude as an exchange of its own, or is refused in autocommit. This hooks
psycopg's internals; tests/integration/test_driver.py exercises every entry point on both.

A connection that waited in a pool since its last use (`DB_KEEP_CONNECTION`) may have been
closed by the pooler, a restart or a NAT meanwhile, in a way no check before sending can see.
If the first exchange of a transaction then fails because the connection is gone, the cursor's
`execute` reconnects and sends it once more (`_PoolerTransactions.may_resend`; `executemany`,
`stream` and `copy` fail with a 503 as before). That is safe because the lost exchange held no
COMMIT: BEGIN opened a transaction that the server rolls back when its connection ends, so none
of it can have been applied. It would not be safe for an autocommit write, whose implicit
transaction commits at the Sync that ends the exchange: the server may have applied it just
before the connection went. So an autocommit statement is sent again only in a read-only
session (the server refuses writes there), and a lost COMMIT is never sent again: it stays
`CommitOutcomeUnknownError`.
https://www.psycopg.org/psycopg3/docs/advanced/pipeline.html
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache, partial
from typing import Any, Protocol, Self
from weakref import ReferenceType, ref

import psycopg
from psycopg import pq, sql
from psycopg._connection_base import BaseConnection
from psycopg._pipeline_base import BasePipeline
from psycopg._queries import PostgresQuery
from psycopg.abc import Params, PQGen, Query, QueryNoTemplate
from psycopg.adapt import Transformer

from shared._deadline import Watch, remaining_seconds, watch
from shared._identity import Identity, current_identity

logger = logging.getLogger(__name__)

_IDLE = pq.TransactionStatus.IDLE
MIN_CONNECT_TIMEOUT_S = 2
"""libpq's (and psycopg's) smallest connect timeout: a shorter one is taken as 2 s."""

LEGACY_CLAIMS = ("sub", "role", "email")
"""Claims that Supabase's `auth.*()` functions read from `request.jwt.claim.<name>` first."""

type _AnyConnection = psycopg.Connection[Any] | psycopg.AsyncConnection[Any]


class CommitOutcomeUnknownError(psycopg.OperationalError):
    """The connection was lost while COMMIT was in flight: the change may or may not be stored.

    Nobody can tell at that moment: a stalled pooler may still deliver the COMMIT after the
    request has answered. It stays an OperationalError, so SQLAlchemy discards the connection.
    """


class TransactionStartRefusedError(psycopg.NotSupportedError):
    """A statement could not start its transaction with the transaction's settings."""


class _Transaction(Protocol):
    """What starting a transaction reads from a connection."""

    statement_timeout_ms: int
    wants_transaction: bool

    @property
    def isolation_level(self) -> psycopg.IsolationLevel | None: ...

    @property
    def read_only(self) -> bool | None: ...


type _Statement = tuple[bytes, list[str]]
"""A statement of the transaction's start, as SQL text, and the values bound to its `%s`."""


def _begin(conn: _Transaction) -> bytes | None:
    """BEGIN, unless SQLAlchemy asked for autocommit."""
    if not conn.wants_transaction:
        return None
    level = conn.isolation_level
    return _begin_statement(None if level is None else level.name.replace("_", " "))


# The statements below depend only on names (and, for SET LOCAL, a value) that the driver
# chooses, never on a client's input, so each is composed once and reused by every transaction.


@lru_cache(maxsize=8)
def _begin_statement(level: str | None) -> bytes:
    if level is None:
        return b"BEGIN"
    return sql.SQL("BEGIN ISOLATION LEVEL {}").format(sql.SQL(level)).as_bytes()


@lru_cache(maxsize=64)
def _set_local_statement(name: str, value: str) -> bytes:
    return sql.SQL("SET LOCAL {} = {}").format(sql.SQL(name), sql.Literal(value)).as_bytes()


@lru_cache(maxsize=64)
def _set_config_statement(names: tuple[str, ...]) -> bytes:
    calls = sql.SQL(", ").join(
        sql.SQL("set_config({}, %s, true)").format(sql.Literal(name)) for name in names
    )
    return sql.SQL("SELECT {}").format(calls).as_bytes()


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


def _legacy_claim_settings(identity: Identity) -> dict[str, str]:
    """The settings Supabase's `auth.*()` functions read before `request.jwt.claims`.

    Another client of the pooler may have set them for the whole session on the server
    connection; set here transaction-locally, to the identity's values or empty (which makes
    those functions fall back to `request.jwt.claims`), no stale value can speak for it.
    """
    settings = {"request.jwt.claim": ""}  # read first by auth.jwt()
    for claim in LEGACY_CLAIMS:
        value = identity.claims.get(claim)
        settings[f"request.jwt.claim.{claim}"] = value if isinstance(value, str) else ""
    return settings


def _prelude(conn: _Transaction) -> list[_Statement]:
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
        return [(_set_local_statement(name, value), []) for name, value in settings.items()]
    if identity is not None:
        settings["role"] = identity.role
        settings["request.jwt.claims"] = identity.claims_json()
        settings |= _legacy_claim_settings(identity)
    if not settings:
        return []
    return [(_set_config_statement(tuple(settings)), list(settings.values()))]


@contextmanager
def _commit_outcome(conn: _AnyConnection) -> Iterator[None]:
    """Tell a connection lost during COMMIT apart: nobody knows whether the change is stored."""
    try:
        yield
    except psycopg.OperationalError as exc:
        if conn.broken or conn.closed:
            raise CommitOutcomeUnknownError("connection lost during COMMIT") from exc
        raise


def _discard_if_stuck(pgconn: pq.abc.PGconn) -> None:
    """Close a connection that a failure left in pipeline mode: nothing more can be sent on it.

    A closed connection is what SQLAlchemy recognises as a disconnect: it discards it instead of
    trying a ROLLBACK that could not be sent either.
    """
    if pgconn.pipeline_status != pq.PipelineStatus.OFF:
        pgconn.finish()


@contextmanager
def _discarded_if_stuck(conn: _AnyConnection) -> Iterator[None]:
    """`_discard_if_stuck` after any database error in the block."""
    try:
        yield
    except psycopg.Error:
        _discard_if_stuck(conn.pgconn)
        raise


def _follow_replacement(cursor: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> None:
    """Point a cursor at its connection's replacement libpq connection (it keeps its own
    reference), with a new transformer for the statement it sends again."""
    cursor._pgconn = cursor.connection.pgconn
    cursor._last_query = None


class _PoolerTransactions(BaseConnection[Any]):
    """Where every transaction starts, shared by the sync and asyncio connections.

    Everything here is a plain method or a psycopg generator (`PQGen`), which the sync and the
    asyncio connection each drive in their own way: one implementation for both.
    """

    statement_timeout_ms = 0
    wants_transaction = True
    reused = False
    """Set by the pool that kept this connection idle before this use: it may have gone stale."""
    connect_params: dict[str, Any]
    """What the connection was opened with, to open its replacement (`may_resend`)."""
    deadline_watch: Watch | None = None

    @property
    def autocommit(self) -> bool:
        """What SQLAlchemy asked for; the wire stays in autocommit."""
        return not self.wants_transaction

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        self.wants_transaction = not value

    def _start_query(self) -> PQGen[None]:
        """Start the transaction before the first statement of any cursor (psycopg's hook)."""
        if self.pgconn.transaction_status != _IDLE:
            return
        commands = self._transaction_start()
        if not commands:
            return
        if self._pipeline is not None:
            self._enqueue(self._pipeline, commands)  # sent with the statement that follows
            return
        if not self.wants_transaction:
            raise TransactionStartRefusedError(
                "this statement cannot be pipelined, and in autocommit the transaction's"
                " settings would end before it runs: run it inside a transaction"
            )
        yield from self._send_alone(commands)

    def watch_until_deadline(self) -> None:
        """Cut this connection when the current invocation's deadline passes."""
        self.stop_watching()
        self.deadline_watch = watch(self.pgconn.socket)

    def stop_watching(self) -> None:
        """The connection is done with the invocation (or about to close)."""
        watched, self.deadline_watch = self.deadline_watch, None
        if watched is not None:
            watched.cancel()

    def may_resend(self, error: psycopg.Error) -> bool:
        """Whether the failed first exchange of a transaction may be sent again on a new
        connection (see the module docstring for why this is safe, and when it would not be).

        Only when the connection waited in a pool before this use (a fresh one that fails has
        nothing stale about it: that is an outage), it is now gone (not a statement's own
        error), the exchange could not have committed anything, and the deadline leaves time
        to connect again (a connection the deadline cut answers 503).
        """
        left = remaining_seconds()
        return (
            isinstance(error, psycopg.OperationalError)
            and self.reused
            and self.closed
            and (self.wants_transaction or bool(self.read_only))
            and (left is None or left >= MIN_CONNECT_TIMEOUT_S)
        )

    def _replacement_params(self) -> dict[str, Any]:
        """The connection's own parameters, its connect timeout within the deadline."""
        params = dict(self.connect_params)
        left = remaining_seconds()
        if left is not None:
            params["connect_timeout"] = min(int(params["connect_timeout"]), int(left))
        return params

    def _adopt(self, replacement: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
        """Carry on over the replacement's libpq connection, as the same Python object.

        SQLAlchemy holds this object (in its pool record and in the running transaction), so
        the new server connection moves in here rather than replacing it.
        """
        lost, self.pgconn = self.pgconn, replacement.pgconn
        lost.finish()
        replacement.pgconn = lost  # closed: the replacement object goes away quietly
        self_ref: ReferenceType[BaseConnection[Any]] = ref(self)
        self.pgconn.notice_handler = partial(BaseConnection._notice_handler, self_ref)
        self.pgconn.notify_handler = partial(BaseConnection._notify_handler, self_ref)
        self.reused = False
        if self.deadline_watch is not None:
            self.watch_until_deadline()
        logger.info("connection lost before a transaction's first exchange: sent it again")

    def _get_tx_start_command(self) -> bytes:
        """Refuse psycopg's own BEGIN (`transaction()`, `tpc_begin()`): it carries no settings."""
        raise TransactionStartRefusedError(
            "transactions start with their first statement here; use SQLAlchemy's begin()"
        )

    def _transaction_start(self) -> list[PostgresQuery]:
        """BEGIN and the prelude, converted as a cursor converts them: `$n` and bound values."""
        begin = _begin(self)
        statements: list[_Statement] = []
        if begin is not None:
            statements.append((begin, []))
        commands = []
        for statement, values in statements + _prelude(self):
            command = PostgresQuery(Transformer(self))
            command.convert(statement, values or None)
            commands.append(command)
        return commands

    def _enqueue(self, pipeline: BasePipeline, commands: list[PostgresQuery]) -> None:
        """Queue commands whose results are only checked for errors, as psycopg's own are."""
        for command in commands:
            send = partial(
                self.pgconn.send_query_params,
                command.query,
                command.params,
                param_formats=command.formats,
                param_types=command.types,
            )
            pipeline.command_queue.append(send)
            pipeline.result_queue.append(None)

    def _send_alone(self, commands: list[PostgresQuery]) -> PQGen[None]:
        """Send the commands as one exchange before a statement that cannot join a pipeline."""
        pipeline = self._pipeline = BasePipeline(self)
        try:
            yield from pipeline._enter_gen()
            self._enqueue(pipeline, commands)
            yield from pipeline._exit_gen()
        except psycopg.Error as exc:
            pipeline._exit(exc)  # leaves pipeline mode when it can
            _discard_if_stuck(self.pgconn)
            raise
        else:
            pipeline._exit(None)
        finally:
            self._pipeline = None


class PoolerConnection(_PoolerTransactions, psycopg.Connection[Any]):
    """The sync connection: psycopg's, starting transactions as `_PoolerTransactions` says."""

    @classmethod
    def open(cls, statement_timeout_ms: int, **params: Any) -> PoolerConnection:
        """Connect in autocommit on the wire, with these settings for every transaction."""
        conn = cls.connect(autocommit=True, cursor_factory=PoolerCursor, **params)
        conn.statement_timeout_ms = statement_timeout_ms
        conn.connect_params = params
        return conn

    def replace_lost_connection(self) -> None:
        """Log in again under this object, after `may_resend` said yes."""
        self._adopt(psycopg.Connection.connect(autocommit=True, **self._replacement_params()))

    def set_autocommit(self, value: bool) -> None:
        """Method version of the `autocommit` setter."""
        self.wants_transaction = not value

    def commit(self) -> None:
        """COMMIT, telling a lost connection during it apart from any other failure."""
        with _commit_outcome(self):
            super().commit()


class PoolerCursor(psycopg.Cursor[Any]):
    """Runs a transaction's first `execute` in a pipeline, so its start shares the exchange."""

    def execute(  # type: ignore[override]
        self, query: QueryNoTemplate, params: Params | None = None, **kwargs: Any
    ) -> Self:
        conn = self.connection
        if conn._pipeline is not None or conn.pgconn.transaction_status != _IDLE:
            return super().execute(query, params, **kwargs)
        assert isinstance(conn, PoolerConnection)
        try:
            with _discarded_if_stuck(conn), conn.pipeline():
                return super().execute(query, params, **kwargs)
        except psycopg.Error as error:
            if not conn.may_resend(error):
                raise
        conn.replace_lost_connection()
        _follow_replacement(self)
        with _discarded_if_stuck(conn), conn.pipeline():
            return super().execute(query, params, **kwargs)

    def executemany(
        self, query: Query, params_seq: Iterable[Params], *, returning: bool = False
    ) -> None:
        with _discarded_if_stuck(self.connection):  # psycopg pipelines it already
            super().executemany(query, params_seq, returning=returning)


class AsyncPoolerConnection(_PoolerTransactions, psycopg.AsyncConnection[Any]):
    """The asyncio connection, for SQLAlchemy's asyncio engine; the same transactions."""

    @classmethod
    async def open(cls, statement_timeout_ms: int, **params: Any) -> AsyncPoolerConnection:
        """Connect in autocommit on the wire, with these settings for every transaction."""
        conn = await cls.connect(autocommit=True, cursor_factory=AsyncPoolerCursor, **params)
        conn.statement_timeout_ms = statement_timeout_ms
        conn.connect_params = params
        return conn

    async def replace_lost_connection(self) -> None:
        """Log in again under this object, after `may_resend` said yes."""
        params = self._replacement_params()
        self._adopt(await psycopg.AsyncConnection.connect(autocommit=True, **params))

    async def set_autocommit(self, value: bool) -> None:
        """Method version of the `autocommit` setter."""
        self.wants_transaction = not value

    async def commit(self) -> None:
        """COMMIT, telling a lost connection during it apart from any other failure."""
        with _commit_outcome(self):
            await super().commit()


class AsyncPoolerCursor(psycopg.AsyncCursor[Any]):
    """The asyncio `PoolerCursor`."""

    async def execute(  # type: ignore[override]
        self, query: QueryNoTemplate, params: Params | None = None, **kwargs: Any
    ) -> Self:
        conn = self.connection
        if conn._pipeline is not None or conn.pgconn.transaction_status != _IDLE:
            return await super().execute(query, params, **kwargs)
        assert isinstance(conn, AsyncPoolerConnection)
        try:
            with _discarded_if_stuck(conn):
                async with conn.pipeline():
                    return await super().execute(query, params, **kwargs)
        except psycopg.Error as error:
            if not conn.may_resend(error):
                raise
        await conn.replace_lost_connection()
        _follow_replacement(self)
        with _discarded_if_stuck(conn):
            async with conn.pipeline():
                return await super().execute(query, params, **kwargs)

    async def executemany(
        self, query: Query, params_seq: Iterable[Params], *, returning: bool = False
    ) -> None:
        with _discarded_if_stuck(self.connection):  # psycopg pipelines it already
            await super().executemany(query, params_seq, returning=returning)
