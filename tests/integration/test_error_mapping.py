"""The SQLSTATE mapping, fed the real errors Postgres and the pooler raise, never made-up ones.

Each case runs the offending SQL through the project's engine and the local PgBouncer
(transaction mode) and hands the exception the code would see to `error_response`. Values in
the offending rows carry a marker that must never reach a response body or a log line.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from functions.items.models import Item
from infra.local_stack import LocalStack
from shared._engine import get_engine, transaction
from shared._error_mapping import RETRY_AFTER_SECONDS, ErrorResponse, error_response
from shared._identity import ANONYMOUS, acting_as, acting_as_login_role
from shared._sessions import session_scope
from tests.fixtures.pgbouncer import pooler_settings
from tests.fixtures.stack import reset_caches

pytestmark = pytest.mark.usefixtures("as_user")  # items are a user's own rows

MARKER = f"LEAK{uuid.uuid4().hex[:8]}"
"""Put into the offending values; finding it in a body or a log means a value leaked."""


def fails(statements: str, **params: Any) -> Callable[[], object]:
    """Run `;`-separated statements in one transaction through the pooler."""

    def run() -> None:
        with transaction() as conn:
            for statement in statements.split(";"):
                conn.execute(text(statement), params)

    return run


def error_of(run: Callable[[], object]) -> BaseException:
    try:
        run()
    except Exception as exc:
        return exc
    pytest.fail("the statement did not fail")


def mapped(exc: BaseException, caplog: pytest.LogCaptureFixture) -> ErrorResponse:
    """The response for the error, with its log lines captured and checked for values."""
    with caplog.at_level(logging.DEBUG, logger="shared._error_mapping"):
        response = error_response(exc)
    assert MARKER not in str(response.body)
    assert MARKER not in caplog.text
    assert all(record.exc_info is None for record in caplog.records)
    return response


def sqlstate_of(exc: BaseException) -> str | None:
    return getattr(getattr(exc, "orig", exc), "sqlstate", None)


def logged_at(caplog: pytest.LogCaptureFixture) -> list[int]:
    return [record.levelno for record in caplog.records if record.name == "shared._error_mapping"]


def new_sku() -> str:
    return f"{MARKER}-{uuid.uuid4().hex[:8]}"


CONFLICTS = {
    "23505 unique": fails(
        "INSERT INTO items (sku, name) VALUES (:sku, 'a'), (:sku, 'b')", sku=new_sku()
    ),
    "23P01 exclusion": fails(
        "CREATE TEMP TABLE booking (during int4range, EXCLUDE USING gist (during WITH &&))"
        " ON COMMIT DROP;"
        f"INSERT INTO booking VALUES ('[1,5)'), ('[3,{len(MARKER)})')"
    ),
    "23503 foreign key": fails(
        "CREATE TEMP TABLE parent (id text PRIMARY KEY) ON COMMIT DROP;"
        "CREATE TEMP TABLE child (parent_id text REFERENCES parent) ON COMMIT DROP;"
        "INSERT INTO child VALUES (:missing)",
        missing=MARKER,
    ),
}

UNSTORABLE = {
    "23514 check": fails(
        "INSERT INTO items (sku, name, quantity) VALUES (:sku, 'a', -1)", sku=new_sku()
    ),
    "22001 string too long": fails(
        "INSERT INTO items (sku, name) VALUES (:sku, 'a')", sku=new_sku() * 10
    ),
    "22003 numeric out of range": fails(
        "INSERT INTO items (sku, name, quantity) VALUES (:sku, 'a', :quantity)",
        sku=new_sku(),
        quantity=2**31,
    ),
    "22P05 NUL in JSON": fails("SELECT CAST(:doc AS jsonb)", doc=f'"{MARKER}\\u0000"'),
    "NUL in text, refused by the driver": fails(
        "INSERT INTO items (sku, name) VALUES (:sku, :name)", sku=new_sku(), name=f"{MARKER}\0"
    ),
}


@pytest.mark.parametrize("case", CONFLICTS)
def test_unique_exclusion_and_foreign_key_violations_are_409(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    exc = error_of(CONFLICTS[case])
    assert sqlstate_of(exc) == case.split()[0]

    response = mapped(exc, caplog)

    assert response.status_code == 409
    assert response.body["code"] == "conflict"
    assert logging.ERROR not in logged_at(caplog)


@pytest.mark.parametrize("case", UNSTORABLE)
def test_check_violations_and_data_exceptions_are_a_generic_422(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    expected_sqlstate = None if "driver" in case else case.split()[0]
    exc = error_of(UNSTORABLE[case])
    assert sqlstate_of(exc) == expected_sqlstate

    response = mapped(exc, caplog)

    assert response.status_code == 422
    assert response.body == {
        "code": "validation_error",
        "message": "The request holds a value that cannot be stored",
    }
    assert logging.ERROR not in logged_at(caplog)


INSUFFICIENT_PRIVILEGE = {
    "anon, which has no grant on items": (
        ANONYMOUS,
        fails("SELECT count(*) FROM items"),
    ),
    "a user planting a row owned by another (WITH CHECK)": (
        None,  # the test's own user, from `as_user`
        fails(
            "INSERT INTO items (owner_id, sku, name) VALUES (:other, :sku, 'planted')",
            other=str(uuid.uuid4()),
            sku=new_sku(),
        ),
    ),
}


@pytest.mark.parametrize("case", INSUFFICIENT_PRIVILEGE)
def test_insufficient_privilege_is_403_not_500(case: str, caplog: pytest.LogCaptureFixture) -> None:
    """What Postgres answers when the caller's role or a policy refuses the statement: the
    caller may not, and no person needs to act, so no 500 and no ERROR line."""
    identity, statement = INSUFFICIENT_PRIVILEGE[case]
    with acting_as(identity) if identity else nullcontext():
        exc = error_of(statement)
    assert sqlstate_of(exc) == "42501"

    response = mapped(exc, caplog)

    assert response.status_code == 403
    assert response.body == {"code": "forbidden", "message": "The access token may not do this"}
    assert logged_at(caplog) == [logging.INFO]


def test_not_null_violation_is_a_500_logged_with_the_column_and_project_frame(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def store_without_a_name() -> None:
        with session_scope() as session:
            session.add(Item(sku=new_sku(), name=None))  # committed by session_scope

    exc = error_of(store_without_a_name)
    assert sqlstate_of(exc) == "23502"

    response = mapped(exc, caplog)

    assert response.status_code == 500
    assert response.body == {"code": "internal_error", "message": "Internal server error"}
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert record.sqlstate == "23502"  # type: ignore[attr-defined]
    assert record.column == "name"  # type: ignore[attr-defined]
    assert record.table == "items"  # type: ignore[attr-defined]
    # The commit in shared._sessions, not the driver's or SQLAlchemy's frame.
    assert record.raised_at.startswith("shared._sessions:")  # type: ignore[attr-defined]


def test_other_programming_errors_are_a_500_logged_without_the_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    undefined_table = fails(f'SELECT * FROM "{MARKER}"')
    exc = error_of(undefined_table)
    assert sqlstate_of(exc) == "42P01"

    response = mapped(exc, caplog)

    assert response.status_code == 500
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert record.error == "ProgrammingError"  # type: ignore[attr-defined]
    assert record.sqlstate == "42P01"  # type: ignore[attr-defined]


def assert_retry_later(response: ErrorResponse, caplog: pytest.LogCaptureFixture) -> None:
    assert response.status_code == 503
    assert response.headers == {"Retry-After": str(RETRY_AFTER_SECONDS)}
    assert response.body["code"] == "service_unavailable"
    assert logged_at(caplog) == [logging.WARNING]


def test_statement_timeout_is_503(caplog: pytest.LogCaptureFixture) -> None:
    slow = fails("SET LOCAL statement_timeout = 50; SELECT pg_sleep(2)")
    exc = error_of(slow)
    assert sqlstate_of(exc) == "57014"

    assert_retry_later(mapped(exc, caplog), caplog)


@pytest.fixture
def item_id() -> Iterator[int]:
    """A row of its own for the locking tests."""
    with session_scope() as session:
        item = Item(sku=new_sku(), name="locked")
        session.add(item)
        session.flush()
        row_id = item.id
    yield row_id
    with transaction() as conn:
        conn.execute(text("DELETE FROM items WHERE id = :id"), {"id": row_id})


def pooler_connection(stack: LocalStack) -> psycopg.Connection[Any]:
    """A second client of the pooler, to hold locks and change rows under the first."""
    return psycopg.connect(stack.pooler_url(), prepare_threshold=None)


def test_lock_not_available_is_503(
    stack: LocalStack, item_id: int, caplog: pytest.LogCaptureFixture
) -> None:
    with pooler_connection(stack) as holder, holder.transaction():
        holder.execute("SELECT 1 FROM items WHERE id = %s FOR UPDATE", (item_id,))
        locked = fails("SELECT 1 FROM items WHERE id = :id FOR UPDATE NOWAIT", id=item_id)

        exc = error_of(locked)

    assert sqlstate_of(exc) == "55P03"
    assert_retry_later(mapped(exc, caplog), caplog)


def test_serialization_failure_is_503(
    stack: LocalStack, item_id: int, caplog: pytest.LogCaptureFixture
) -> None:
    def update_a_row_changed_since_the_snapshot() -> None:
        # The isolation level goes into BEGIN: acting as a user, the transaction's first
        # statement sets the claims, so a `SET TRANSACTION` after it would come too late.
        repeatable_read = get_engine().execution_options(isolation_level="REPEATABLE READ")
        with repeatable_read.begin() as conn:
            conn.execute(text("SELECT quantity FROM items WHERE id = :id"), {"id": item_id})
            with pooler_connection(stack) as other:
                other.execute("UPDATE items SET quantity = quantity + 1 WHERE id = %s", (item_id,))
                other.commit()
            conn.execute(
                text("UPDATE items SET quantity = quantity + 1 WHERE id = :id"), {"id": item_id}
            )

    exc = error_of(update_a_row_changed_since_the_snapshot)

    assert sqlstate_of(exc) == "40001"
    assert_retry_later(mapped(exc, caplog), caplog)


def test_deadlock_is_503(caplog: pytest.LogCaptureFixture) -> None:
    # Only a superuser may set deadlock_timeout: these transactions run as the login role.
    with acting_as_login_role():
        first, second = new_sku(), new_sku()
        with transaction() as conn:
            conn.execute(
                text(
                    "INSERT INTO items (owner_id, sku, name)"
                    " VALUES (gen_random_uuid(), :a, 'a'), (gen_random_uuid(), :b, 'b')"
                ),
                {"a": first, "b": second},
            )
        both_locked_one = threading.Barrier(2)
        lock_row = text("UPDATE items SET quantity = quantity + 1 WHERE sku = :sku")

        def lock_in_order(one: str, other: str, deadlock_timeout_ms: int) -> None:
            with transaction() as conn:
                conn.execute(text(f"SET LOCAL deadlock_timeout = {deadlock_timeout_ms}"))
                conn.execute(lock_row, {"sku": one})
                both_locked_one.wait(timeout=5)
                conn.execute(lock_row, {"sku": other})

        # The slower detector waits in a thread, in this context (the login role); this side
        # detects the deadlock and fails.
        in_this_context = contextvars.copy_context().run
        waiter = threading.Thread(
            target=in_this_context, args=(lock_in_order, first, second, 5_000)
        )
        waiter.start()
        try:
            exc = error_of(lambda: lock_in_order(second, first, 50))
        finally:
            waiter.join(timeout=10)
        assert not waiter.is_alive()
        with transaction() as conn:
            conn.execute(text("DELETE FROM items WHERE sku IN (:a, :b)"), {"a": first, "b": second})

        assert sqlstate_of(exc) == "40P01"
        assert_retry_later(mapped(exc, caplog), caplog)


def test_server_connection_terminated_mid_request_is_503(
    stack: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    def backend_killed() -> None:
        with transaction() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with psycopg.connect(stack.direct_url(), autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            conn.execute(text("SELECT 1"))

    exc = error_of(backend_killed)

    assert sqlstate_of(exc) == "57P01"  # admin_shutdown, class 57
    assert_retry_later(mapped(exc, caplog), caplog)


def test_connection_class_error_from_the_pooler_is_503(
    stack: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    def idle_in_transaction() -> None:
        with transaction() as conn:
            conn.execute(text("SELECT 1"))
            time.sleep(1.5)
            conn.execute(text("SELECT 1"))

    with pooler_settings(stack, idle_transaction_timeout=1):
        exc = error_of(idle_in_transaction)

    assert sqlstate_of(exc) == "08P01"  # PgBouncer's "idle transaction timeout"
    assert_retry_later(mapped(exc, caplog), caplog)


def test_unreachable_pooler_without_sqlstate_is_503(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    closed_port = stack.pooler_url().replace(str(stack.config.pooler_port), "1")
    monkeypatch.setenv("DATABASE_URL", closed_port)
    reset_caches()
    try:
        exc = error_of(fails("SELECT 1"))
        assert sqlstate_of(exc) is None
        assert_retry_later(mapped(exc, caplog), caplog)
    finally:
        monkeypatch.undo()
        reset_caches()
