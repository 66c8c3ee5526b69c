"""Every way a statement reaches psycopg starts its transaction with the transaction's settings.

Each test runs on both drivers, the sync engine and the asyncio one (the `driver` fixture), each
with NullPool and with a kept connection (DB_KEEP_CONNECTION): the
same scenario, written against a sync `Session`, runs inside `session_scope()` or, through
`AsyncSession.run_sync`, inside `async_session_scope()`, where SQLAlchemy's asyncio adapter drives
psycopg's async cursors. User B acts on rows of its own and rows of user A, with the entry point
under test as the transaction's first statement; then:

- A's rows are unchanged and B sees only its own (row-level security saw B's role and claims;
  outside the transaction the statement would run as the login role, a superuser here);
- a failure after it leaves nothing (the statement belonged to the transaction);
- the statement itself reports the transaction's statement timeout and role.

The stale-claim test runs through a pool of one server connection on which another client of
the pooler left Supabase's legacy per-claim settings for the whole session.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, NamedTuple, Protocol

import psycopg
import pytest
from sqlalchemy import bindparam, delete, event, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.util import await_

from functions.items.models import Item
from infra.local_stack import LocalStack
from shared import _driver as driver_module
from shared._deadline import invocation_deadline
from shared._driver import TransactionStartRefusedError
from shared._engine import get_async_engine, get_engine, transaction
from shared._identity import Identity, acting_as, current_identity
from shared._sessions import read_session, session_scope
from tests.fixtures.identities import new_user
from tests.fixtures.pool_modes import exchanged
from tests.fixtures.proxy import ExchangeCounter
from tests.fixtures.stack import reset_caches
from tests.harness.test_exchange_counter import LOGIN_EXCHANGES
from tests.integration.test_identity_per_transaction import (
    one_server_connection,  # noqa: F401  (a fixture)
    plain_client,
)

STATEMENT_TIMEOUT_MS = 4321
SEEN_BY_THE_STATEMENT = "current_setting('statement_timeout') || ' ' || current_user"
AS_B = f"{STATEMENT_TIMEOUT_MS}ms authenticated"
STATEMENT_TIMEOUT_IN_MS = text(
    "SELECT setting::int FROM pg_settings WHERE name = 'statement_timeout'"
)


class Failure(Exception):
    """Raised after a statement, to see that its transaction rolls it back."""


def run_async[T](coroutine: Coroutine[Any, Any, T]) -> T:
    loop = asyncio.new_event_loop()  # not asyncio.run: it would unset this thread's loop
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


class Driver(Protocol):
    """Runs a scenario written against a sync `Session` on one of the two drivers."""

    def write[T](self, scenario: Callable[[Session], T]) -> T:
        """In a read-write unit of work (`session_scope` or `async_session_scope`)."""
        ...

    def read[T](self, scenario: Callable[[Session], T]) -> T:
        """In a read session, in autocommit (`read_session` or `async_read_session`)."""
        ...

    def stream(self, session: Session, statement: Any) -> list[Any]:
        """Rows of `statement` through a server-side cursor (`stream()` on asyncio)."""
        ...

    def stream_scalars(self, statement: Any) -> list[Any]:
        """A unit of work that only streams `statement`'s scalars, with the public API:
        `scalars()` with `yield_per`, or the asyncio session's `stream_scalars()`."""
        ...

    def copy_in(self, session: Session, statement: str, rows: list[tuple[Any, ...]]) -> None:
        """`COPY ... FROM STDIN` through psycopg's `cursor.copy()`."""
        ...

    def copy_out(self, session: Session, statement: str) -> list[tuple[Any, ...]]:
        """`COPY ... TO STDOUT` through psycopg's `cursor.copy()`."""
        ...

    def psycopg_transaction(self, session: Session) -> None:
        """Enter and leave psycopg's own `transaction()` block."""
        ...

    def connections_opened(self) -> list[object]:
        """A list that grows by one each time the driver's engine opens a connection."""
        ...


def driver_connection(session: Session) -> Any:
    """The psycopg connection under the session's SQLAlchemy connection."""
    return session.connection().connection.driver_connection


class SyncDriver:
    def write[T](self, scenario: Callable[[Session], T]) -> T:
        with session_scope() as session:
            return scenario(session)

    def read[T](self, scenario: Callable[[Session], T]) -> T:
        with read_session() as session:
            return scenario(session)

    def stream(self, session: Session, statement: Any) -> list[Any]:
        return list(session.execute(statement.execution_options(yield_per=1)))

    def stream_scalars(self, statement: Any) -> list[Any]:
        with session_scope() as session:
            return list(session.scalars(statement, execution_options={"yield_per": 1}))

    def copy_in(self, session: Session, statement: str, rows: list[tuple[Any, ...]]) -> None:
        with driver_connection(session).cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)

    def copy_out(self, session: Session, statement: str) -> list[tuple[Any, ...]]:
        with driver_connection(session).cursor() as cursor, cursor.copy(statement) as copy:
            return list(copy.rows())

    def psycopg_transaction(self, session: Session) -> None:
        with driver_connection(session).transaction():
            pass

    def connections_opened(self) -> list[object]:
        opened: list[object] = []
        event.listen(get_engine(), "connect", lambda *_: opened.append(None))
        return opened


def acting() -> Identity:
    """The identity the test put in scope, for the asyncio sessions, which take one."""
    identity = current_identity()
    assert identity is not None, "driver tests act as a user"
    return identity


class AsyncDriver:
    def write[T](self, scenario: Callable[[Session], T]) -> T:
        from shared._sessions import async_session_scope

        async def run() -> T:
            async with async_session_scope(acting()) as session:
                return await session.run_sync(scenario)

        return run_async(run())

    def read[T](self, scenario: Callable[[Session], T]) -> T:
        from shared._sessions import async_read_session

        async def run() -> T:
            async with async_read_session(acting()) as session:
                return await session.run_sync(scenario)

        return run_async(run())

    def stream(self, session: Session, statement: Any) -> list[Any]:
        # In run_sync's greenlet the sync API drives the asyncio adapter's server-side cursor.
        return list(session.execute(statement.execution_options(stream_results=True)))

    def stream_scalars(self, statement: Any) -> list[Any]:
        from shared._sessions import async_session_scope

        async def run() -> list[Any]:
            async with async_session_scope(acting()) as session:
                return [value async for value in await session.stream_scalars(statement)]

        return run_async(run())

    def copy_in(self, session: Session, statement: str, rows: list[tuple[Any, ...]]) -> None:
        async def copy_rows(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.cursor() as cursor, cursor.copy(statement) as copy:
                for row in rows:
                    await copy.write_row(row)

        await_(copy_rows(driver_connection(session)))

    def copy_out(self, session: Session, statement: str) -> list[tuple[Any, ...]]:
        async def copied_rows(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            async with conn.cursor() as cursor, cursor.copy(statement) as copy:
                return [row async for row in copy.rows()]

        return await_(copied_rows(driver_connection(session)))

    def psycopg_transaction(self, session: Session) -> None:
        async def enter(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.transaction():
                pass

        await_(enter(driver_connection(session)))

    def connections_opened(self) -> list[object]:
        opened: list[object] = []
        event.listen(get_async_engine().sync_engine, "connect", lambda *_: opened.append(None))
        return opened


@pytest.fixture(params=["sync", "async"])
def driver(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, pool_mode: str
) -> Iterator[Driver]:
    """The sync or the asyncio driver, with a statement timeout no default would give, its
    engine connecting per request or keeping its connection (`pool_mode`)."""
    monkeypatch.setenv("DB_STATEMENT_TIMEOUT_MS", str(STATEMENT_TIMEOUT_MS))
    reset_caches()
    yield SyncDriver() if request.param == "sync" else AsyncDriver()
    reset_caches()


class Users(NamedTuple):
    a: Identity
    b: Identity
    a_ids: list[int]
    b_ids: list[int]


def insert_items(owner: Identity, count: int) -> list[int]:
    with acting_as(owner), transaction() as conn:
        inserted = conn.execute(
            text(
                "INSERT INTO items (sku, name) SELECT 'DRV-' || gen_random_uuid(), 'original'"
                " FROM generate_series(1, :count) RETURNING id"
            ),
            {"count": count},
        )
        return sorted(inserted.scalars())


@pytest.fixture
def users() -> Users:
    """Users A and B with two items each."""
    a, b = new_user(), new_user()
    return Users(a, b, insert_items(a, 2), insert_items(b, 2))


def names(stack: LocalStack, ids: list[int]) -> dict[int, str]:
    """The rows' names as they are stored, read directly, past row-level security."""
    with psycopg.connect(stack.direct_url(), autocommit=True) as conn:
        found = conn.execute("SELECT id, name FROM items WHERE id = ANY(%s)", (ids,))
        return dict(found.fetchall())


def skus_stored(stack: LocalStack, skus: list[str]) -> dict[str, str]:
    """Which of the SKUs are stored, with their owner."""
    with psycopg.connect(stack.direct_url(), autocommit=True) as conn:
        found = conn.execute("SELECT sku, owner_id::text FROM items WHERE sku = ANY(%s)", (skus,))
        return dict(found.fetchall())


def new_sku() -> str:
    return f"DRV-{uuid.uuid4().hex[:12]}"


def fails_after[T](scenario: Callable[[Session], T]) -> Callable[[Session], T]:
    """The scenario, then a failure that rolls its unit of work back."""

    def failing(session: Session) -> T:
        scenario(session)
        raise Failure

    return failing


def written_then_rolled_back(driver: Driver, scenario: Callable[[Session], object]) -> None:
    with pytest.raises(Failure):
        driver.write(fails_after(scenario))


def test_bulk_orm_update_by_primary_key(driver: Driver, database: LocalStack, users: Users) -> None:
    a0, (b0, b1) = users.a_ids[0], users.b_ids

    def rename(ids: list[int], name: str) -> Callable[[Session], str]:
        def scenario(session: Session) -> str:
            session.execute(update(Item), [{"id": row_id, "name": name} for row_id in ids])
            return str(session.scalar(text(f"SELECT {SEEN_BY_THE_STATEMENT}")))

        return scenario

    with acting_as(users.b):
        seen = driver.write(rename([b0, b1], "renamed by B"))
        with pytest.raises(StaleDataError, match="expected to update 2 row"):
            driver.write(rename([a0, b0], "A's too"))  # A's row is not B's to see
        written_then_rolled_back(driver, rename([b0, b1], "rolled back"))

    assert names(database, [a0, b0, b1]) == {a0: "original", b0: "renamed by B", b1: "renamed by B"}
    assert seen == AS_B


def test_a_bulk_update_first_in_its_transaction_costs_what_any_write_does(
    driver: Driver,
    database: LocalStack,
    users: Users,
    exchange_counter: ExchangeCounter,
    monkeypatch: pytest.MonkeyPatch,
    pool_mode: str,
) -> None:
    """BEGIN, the prelude and every row's UPDATE in one exchange; COMMIT in the second."""
    monkeypatch.setenv("DATABASE_URL", exchange_counter.url(database.pooler_url()))
    reset_caches()
    rows = [{"id": row_id, "name": "counted"} for row_id in users.b_ids]
    with acting_as(users.b):
        driver.write(lambda session: session.scalar(text("SELECT 1")))  # the dialect's queries
        mark = exchange_counter.mark()
        driver.write(lambda session: session.execute(update(Item), rows))

    [connection] = exchanged(exchange_counter, mark, pool_mode)
    login = LOGIN_EXCHANGES if pool_mode == "nullpool" else 0
    assert (connection.login, connection.statements) == (login, 2)


def test_bulk_core_delete_by_primary_key(
    driver: Driver, database: LocalStack, users: Users
) -> None:
    """SQLAlchemy sends an ORM bulk DELETE with parameter lists through Core, as here."""
    a0, (b0, b1) = users.a_ids[0], users.b_ids
    by_id = delete(Item).where(Item.id == bindparam("row_id"))

    def remove(ids: list[int]) -> Callable[[Session], str]:
        def scenario(session: Session) -> str:
            session.connection().execute(by_id, [{"row_id": row_id} for row_id in ids])
            return str(session.scalar(text(f"SELECT {SEEN_BY_THE_STATEMENT}")))

        return scenario

    with acting_as(users.b):
        seen = driver.write(remove([a0, b0]))
        written_then_rolled_back(driver, remove([a0, b1]))

    assert names(database, [a0, b0, b1]) == {a0: "original", b1: "original"}
    assert seen == AS_B


RENAME_SEEN = f"UPDATE items SET name = {SEEN_BY_THE_STATEMENT} WHERE id = %(id)s"


def test_exec_driver_sql(driver: Driver, database: LocalStack, users: Users) -> None:
    a0, b0, b1 = users.a_ids[0], users.b_ids[0], users.b_ids[1]

    def rename(ids: list[int]) -> Callable[[Session], None]:
        def scenario(session: Session) -> None:
            any_of = RENAME_SEEN.replace("= %(id)s", "= ANY(%(ids)s)")
            session.connection().exec_driver_sql(any_of, {"ids": ids})

        return scenario

    with acting_as(users.b):
        driver.write(rename([a0, b0]))
        written_then_rolled_back(driver, rename([b1]))

    assert names(database, [a0, b0, b1]) == {a0: "original", b0: AS_B, b1: "original"}


def test_executemany(driver: Driver, database: LocalStack, users: Users) -> None:
    a0, b0, b1 = users.a_ids[0], users.b_ids[0], users.b_ids[1]

    def rename(ids: list[int]) -> Callable[[Session], None]:
        def scenario(session: Session) -> None:
            cursor = session.connection().connection.cursor()  # the DBAPI's, as SQLAlchemy's
            cursor.executemany(RENAME_SEEN, [{"id": row_id} for row_id in ids])

        return scenario

    with acting_as(users.b):
        driver.write(rename([a0, b0]))
        written_then_rolled_back(driver, rename([b1]))

    assert names(database, [a0, b0, b1]) == {a0: "original", b0: AS_B, b1: "original"}


class Streamed(NamedTuple):
    rows: list[Any]
    started_at: object  # now(): the start of the transaction the statement ran in


def test_server_side_cursor(driver: Driver, database: LocalStack, users: Users) -> None:
    sku = new_sku()
    visible = select(Item.id, text(SEEN_BY_THE_STATEMENT), text("now()"), Item.name).where(
        Item.id.in_(users.a_ids + users.b_ids)
    )

    def stream_then_write(session: Session) -> Streamed:
        rows = driver.stream(session, visible.order_by(Item.id))
        session.add(Item(sku=sku, name="written after the stream"))
        session.flush()
        return Streamed(rows, session.scalar(text("SELECT now()")))

    streamed: list[Streamed] = []
    with acting_as(users.b):
        written_then_rolled_back(
            driver, lambda session: streamed.append(stream_then_write(session))
        )

    [(rows, started_at)] = streamed
    assert [row[0] for row in rows] == users.b_ids
    assert {row[1] for row in rows} == {AS_B}
    assert {row[2] for row in rows} == {started_at}  # the rolled-back transaction's
    assert skus_stored(database, [sku]) == {}


def test_stream_scalars(driver: Driver, users: Users) -> None:
    ids = users.a_ids + users.b_ids
    visible = select(Item.id).where(Item.id.in_(ids)).order_by(Item.id)
    seen = select(text(SEEN_BY_THE_STATEMENT)).select_from(Item).where(Item.id.in_(ids))

    with acting_as(users.b):
        streamed = driver.stream_scalars(visible)
        seen_by_the_stream = driver.stream_scalars(seen)

    assert streamed == users.b_ids
    assert seen_by_the_stream == [AS_B] * len(users.b_ids)


def test_copy(driver: Driver, database: LocalStack, users: Users) -> None:
    sku = new_sku()
    ids = ",".join(map(str, users.a_ids + users.b_ids))
    seen_query = (
        f"COPY (SELECT id, {SEEN_BY_THE_STATEMENT} FROM items WHERE id IN ({ids})) TO STDOUT"
    )

    def copy_then_write(session: Session) -> object:
        [(copied_at,)] = driver.copy_out(session, "COPY (SELECT now()::text) TO STDOUT")
        session.add(Item(sku=sku, name="written after the copy"))
        session.flush()
        return copied_at == session.scalar(text("SELECT now()::text"))

    def copy_in(session: Session) -> None:
        driver.copy_in(session, "COPY items (sku, name) FROM STDIN", [(sku, "copied")])

    started_together: list[object] = []
    with acting_as(users.b):
        seen = driver.write(lambda session: driver.copy_out(session, seen_query))
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="row-level security"):
            driver.write(copy_in)  # the login role, a superuser here, would bypass it
        written_then_rolled_back(
            driver, lambda session: started_together.append(copy_then_write(session))
        )

    assert sorted(int(row_id) for row_id, _ in seen) == users.b_ids
    assert {who for _, who in seen} == {AS_B}
    assert started_together == [True]  # the COPY ran in the rolled-back transaction
    assert skus_stored(database, [sku]) == {}


def test_statements_that_cannot_be_pipelined_are_refused_in_autocommit(
    driver: Driver, users: Users
) -> None:
    def stream(session: Session) -> object:
        return driver.stream(session, select(Item.id))

    def copy(session: Session) -> object:
        return driver.copy_out(session, "COPY (SELECT 1) TO STDOUT")

    refused = []
    with acting_as(users.b):
        for scenario in (stream, copy):
            with pytest.raises((DBAPIError, TransactionStartRefusedError)) as caught:
                driver.read(scenario)
            error = caught.value
            refused.append(type(getattr(error, "orig", error)))

    assert refused == [TransactionStartRefusedError] * 2


def test_psycopgs_own_begin_is_refused(driver: Driver, users: Users) -> None:
    with acting_as(users.b), pytest.raises(TransactionStartRefusedError):
        driver.write(driver.psycopg_transaction)


@pytest.mark.usefixtures("one_server_connection")
def test_stale_legacy_claims_on_the_shared_server_connection_speak_for_nobody(
    empty_database: LocalStack, driver: Driver
) -> None:
    users = plant_stale_claims(empty_database)

    with acting_as(users.b):
        seen_by_b = driver.write(what_b_sees_and_changes(users.a_ids[0]))

    assert seen_by_b == (users.b_ids, 0)
    assert names(empty_database, users.a_ids)[users.a_ids[0]] == "original"


@pytest.mark.usefixtures("one_server_connection")
def test_control_without_neutralising_them_b_acts_as_a(
    empty_database: LocalStack, driver: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = plant_stale_claims(empty_database)
    monkeypatch.setattr(driver_module, "_legacy_claim_settings", lambda _identity: {})

    with acting_as(users.b):
        seen_by_b = driver.write(what_b_sees_and_changes(users.a_ids[0]))

    assert seen_by_b == (users.a_ids, 1)
    assert names(empty_database, users.a_ids)[users.a_ids[0]] == "changed by B"


def plant_stale_claims(stack: LocalStack) -> Users:
    """A's and B's items, then another client of the pooler leaves A's legacy claims set for
    the session on the one server connection; checked still there after B's turn by the test."""
    a, b = new_user(), new_user()
    users = Users(a, b, insert_items(a, 2), insert_items(b, 1))
    with plain_client(stack) as conn:
        conn.execute(
            "SELECT set_config('request.jwt.claim.sub', %s, false),"
            " set_config('request.jwt.claim.role', 'authenticated', false)",
            (a.user_id,),
        )
    with plain_client(stack) as conn:  # the same backend: a pool of one
        left = conn.execute("SELECT current_setting('request.jwt.claim.sub')").fetchone()
    assert left == (a.user_id,)
    return users


def what_b_sees_and_changes(a_item: int) -> Callable[[Session], tuple[list[int], int]]:
    def scenario(session: Session) -> tuple[list[int], int]:
        seen = sorted(session.scalars(select(Item.id)))
        changed = session.execute(
            text("UPDATE items SET name = 'changed by B' WHERE id = :id"), {"id": a_item}
        )
        return seen, changed.rowcount  # type: ignore[attr-defined]

    return scenario


def test_objects_stay_readable_after_their_unit_of_work_without_a_connection(
    driver: Driver, users: Users
) -> None:
    with acting_as(users.b):
        item = driver.write(lambda session: session.get(Item, users.b_ids[0]))
        opened = driver.connections_opened()

    assert item is not None
    assert (item.id, item.name) == (users.b_ids[0], "original")  # not expired by the commit
    assert opened == []


@pytest.mark.parametrize("configured_ms", [0, 600_000], ids=["none", "beyond the deadline"])
def test_the_statement_timeout_is_what_is_left_of_the_deadline(
    driver: Driver, monkeypatch: pytest.MonkeyPatch, configured_ms: int
) -> None:
    monkeypatch.setenv("DB_STATEMENT_TIMEOUT_MS", str(configured_ms))
    reset_caches()

    with invocation_deadline(5):
        seen_ms = driver.write(lambda session: session.scalar(STATEMENT_TIMEOUT_IN_MS))

    assert seen_ms is not None
    assert 3_000 < seen_ms <= 5_000
