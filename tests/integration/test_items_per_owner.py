"""What one user's items cost, and how many they may keep, beside another owner's many rows.

The list must cost what the caller owns: with 100k rows of another owner in the table, a page
of the caller's items is read from the (owner_id, id) index, and takes about as long as with
none. The per-owner cap (migration 0003) refuses one item more with a 409, writing nothing.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import func, select, text

from functions.items.handler import handler
from functions.items.models import Item
from functions.items.routes import owned_page
from infra.local_stack import LocalStack
from shared._identity import Identity, acting_as
from shared._sessions import read_session
from tests.fixtures.lambda_events import LambdaTestContext, body_of, http_event

OTHER_OWNERS_ROWS = 100_000
CALLERS_ROWS = 30
RUNS = 41
NEWEST_IDS = 2**62
MAX_ITEMS_PER_OWNER = 10_000  # the default, migration 0003


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    return handler(event, LambdaTestContext())


def insert_rows(stack: LocalStack, owner: str, count: int, *, newest: bool = False) -> None:
    """`count` items of `owner`, in one INSERT ... SELECT as the login role, as a bulk load
    would: without the per-row cap trigger (replica mode), which would count the owner's rows
    once per row inserted; then ANALYZE, so the planner knows the table as it is. `newest`:
    with ids above any the table will hand out in the test, as if created last."""
    with psycopg.connect(stack.direct_url()) as conn:
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(
            "INSERT INTO items (id, owner_id, sku, name)"
            " SELECT coalesce(%s + n, nextval(pg_get_serial_sequence('items', 'id'))),"
            " %s, 'BULK-' || n, 'bulk' FROM generate_series(1, %s) AS n",
            (NEWEST_IDS if newest else None, owner, count),
        )
    with psycopg.connect(stack.direct_url(), autocommit=True) as conn:
        conn.execute("ANALYZE items")


def delete_rows(stack: LocalStack, owner: str) -> None:
    """Remove `owner`'s items, and vacuum, so no later test reads past their dead rows."""
    with psycopg.connect(stack.direct_url(), autocommit=True) as conn:
        conn.execute("DELETE FROM items WHERE owner_id = %s", (owner,))
        conn.execute("VACUUM ANALYZE items")


def pooler_client(stack: LocalStack, user: Identity) -> psycopg.Connection[Any]:
    """A client of the transaction pooler whose first transaction acts as `user`."""
    conn = psycopg.connect(stack.pooler_url(), prepare_threshold=None)
    conn.execute(
        "SELECT set_config('role', 'authenticated', true),"
        " set_config('request.jwt.claims', %s, true)",
        (user.claims_json(),),
    )
    return conn


def list_statement(user: Identity) -> str:
    """The SQL of the list's first page for `user`, as the route builds it."""
    with read_session() as session:
        compiled = owned_page(user.user_id, after=0, limit=21).compile(
            session.get_bind(), compile_kwargs={"literal_binds": True}
        )
    return str(compiled)


def list_page_ms(stack: LocalStack, user: Identity) -> float:
    """Median milliseconds of the list's statement run as `user` through the pooler, in one
    transaction of one connection, so that the statement is timed and not the login."""
    timings = []
    with pooler_client(stack, user) as conn:
        statement = list_statement(user)
        for _ in range(RUNS):
            started = time.perf_counter()
            page = conn.execute(statement).fetchall()
            timings.append((time.perf_counter() - started) * 1000)
            assert len(page) == 21
    return statistics.median(timings)


def explain(user: Identity) -> str:
    """The plan of the list's own statement, run as `user` through the pooler."""
    statement = list_statement(user)
    with acting_as(user), read_session() as session:
        return "\n".join(session.scalars(text(f"EXPLAIN {statement}")))


@pytest.fixture
def other_owner(database: LocalStack) -> Iterator[str]:
    """Another owner, whose rows the test adds: older (lower ids) than the caller's, so walking
    the primary key would meet every one of them before the first of the caller's."""
    other = str(uuid.uuid4())
    yield other
    delete_rows(database, other)


@pytest.fixture
def caller(as_user: Identity, database: LocalStack) -> Iterator[Identity]:
    """The test's user, owning a few items, newer (higher ids) than any other owner's."""
    assert as_user.user_id is not None
    insert_rows(database, as_user.user_id, CALLERS_ROWS, newest=True)
    yield as_user
    delete_rows(database, as_user.user_id)


def test_the_list_reads_the_callers_rows_from_the_owner_index(
    caller: Identity, other_owner: str, database: LocalStack
) -> None:
    insert_rows(database, other_owner, OTHER_OWNERS_ROWS)

    plan = explain(caller)

    assert "ix_items_owner_id_id" in plan, plan
    assert f"Index Cond: ((owner_id = '{caller.user_id}'::uuid) AND (id > 0))" in plan, plan


def test_the_list_costs_what_the_caller_owns(
    caller: Identity, other_owner: str, database: LocalStack, record_property: Any
) -> None:
    list_page_ms(database, caller)  # warm: the engine, the first connection
    alone = list_page_ms(database, caller)
    insert_rows(database, other_owner, OTHER_OWNERS_ROWS)
    crowded = list_page_ms(database, caller)

    record_property("list_ms_alone", round(alone, 3))
    record_property("list_ms_beside_100k_rows", round(crowded, 3))
    print(f"\nlist statement median: {alone:.3f} ms alone, {crowded:.3f} ms beside 100k rows")  # noqa: T201
    assert crowded < 2 * alone, (alone, crowded)


def own_items(user: Identity) -> int:
    with acting_as(user), read_session() as session:
        return session.scalar(select(func.count()).select_from(Item)) or 0


def test_at_the_cap_a_create_is_refused_and_writes_nothing(
    as_user: Identity, database: LocalStack
) -> None:
    assert as_user.user_id is not None
    insert_rows(database, as_user.user_id, MAX_ITEMS_PER_OWNER - 1)
    try:
        last = invoke(http_event("POST /items", body={"sku": "LAST-ONE", "name": "fits"}))
        refused = invoke(http_event("POST /items", body={"sku": "ONE-TOO-MANY", "name": "no"}))
        kept = own_items(as_user)
    finally:
        delete_rows(database, as_user.user_id)

    assert last["statusCode"] == 201, last
    assert refused["statusCode"] == 409, refused
    assert body_of(refused)["code"] == "item_limit_reached"
    assert kept == MAX_ITEMS_PER_OWNER


def waiting_on_a_lock(stack: LocalStack) -> bool:
    with psycopg.connect(stack.direct_url(), autocommit=True) as conn:
        return bool(conn.execute("SELECT 1 FROM pg_locks WHERE NOT granted").fetchall())


def test_concurrent_creates_cannot_race_past_the_cap(
    as_user: Identity, database: LocalStack
) -> None:
    """The last free place, taken by two transactions at once: the second waits for the
    first, then counts its row and is refused; both would commit if each counted alone."""
    assert as_user.user_id is not None
    insert_rows(database, as_user.user_id, MAX_ITEMS_PER_OWNER - 1)
    outcome: list[BaseException | None] = []

    def second_create() -> None:
        try:
            with pooler_client(database, as_user) as second:
                second.execute("INSERT INTO items (sku, name) VALUES ('RACE-2', 'second')")
            outcome.append(None)
        except psycopg.Error as error:
            outcome.append(error)

    try:
        with pooler_client(database, as_user) as first:
            first.execute("INSERT INTO items (sku, name) VALUES ('RACE-1', 'first')")
            racer = threading.Thread(target=second_create)
            racer.start()
            deadline = time.monotonic() + 5
            while racer.is_alive() and not waiting_on_a_lock(database):
                assert time.monotonic() < deadline, "the second create neither ran nor waited"
                time.sleep(0.02)
        racer.join(timeout=10)  # `first` committed as its block ended
        kept = own_items(as_user)
    finally:
        delete_rows(database, as_user.user_id)

    [error] = outcome
    assert isinstance(error, psycopg.errors.CheckViolation), error
    assert error.diag.constraint_name == "items_max_per_owner"
    assert kept == MAX_ITEMS_PER_OWNER
