"""One request, one connection, one login, and no statement it does not need.

Counted where they happen: logins in PgBouncer's log, statements in Postgres's log
(log_statement=all), both written by the real servers of the local stack.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from mangum import Mangum
from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from functions.health.handler import handler as health_handler
from functions.items.handler import handler as items_handler
from functions.items.models import Item
from infra.local_stack import LocalStack
from shared._engine import autocommit_connection, get_engine, transaction
from shared._identity import ANONYMOUS, Identity, acting_as, acting_as_login_role
from tests.fixtures.lambda_events import LambdaTestContext, body_of, http_event
from tests.fixtures.pool_modes import exchanged
from tests.fixtures.proxy import ExchangeCounter
from tests.fixtures.service import handler_for
from tests.fixtures.stack import TEST_APPLICATION_NAME, reset_caches
from tests.fixtures.tokens import Tokens
from tests.harness.test_exchange_counter import LOGIN_EXCHANGES

pytestmark = pytest.mark.usefixtures("as_user")  # items are a user's own rows

WHO_AM_I = text(
    "SELECT current_user AS role, current_setting('request.jwt.claims', true) AS claims"
)

STATEMENT = re.compile(rf"app={TEST_APPLICATION_NAME} .*LOG:\s+(?:statement|execute [^:]*): (.*)")
# PgBouncer itself sends these on a server connection: tracked parameters and its health check.
POOLER_OWN = re.compile(
    r"^(SET (application_name|client_encoding|datestyle|timezone)|select 1$)", re.I
)


class ServerLogs:
    """Reads what the pooler and the server logged after a mark."""

    def __init__(self, stack: LocalStack) -> None:
        self.logs = (stack.pgbouncer_log, stack.postgres_log)
        self.offsets = (0, 0)

    def mark(self) -> None:
        self.offsets = tuple(path.stat().st_size for path in self.logs)  # type: ignore[assignment]

    def _since_mark(self, path: Path, offset: int) -> list[str]:
        with path.open(encoding="utf-8", errors="replace") as log:
            log.seek(offset)
            return log.read().splitlines()

    def logins(self) -> int:
        lines = self._since_mark(self.logs[0], self.offsets[0])
        return sum("login attempt" in line for line in lines)

    def statements(self) -> list[str]:
        lines = self._since_mark(self.logs[1], self.offsets[1])
        found = [match.group(1).strip() for line in lines if (match := STATEMENT.search(line))]
        return [statement for statement in found if not POOLER_OWN.match(statement)]


def measure(stack: LocalStack, request: Callable[[], object]) -> tuple[int, list[str]]:
    """Logins and statements that one call causes, once both servers have written them."""
    logs = ServerLogs(stack)
    # Both engines (sync for plain handlers, asyncio for FastAPI) initialised already.
    health_handler(http_event("GET /health"), LambdaTestContext())
    items_handler(http_event("GET /items/{item_id}"), LambdaTestContext())
    time.sleep(0.2)
    logs.mark()
    request()
    time.sleep(0.2)  # the servers write their logs asynchronously to us
    return logs.logins(), logs.statements()


def create_item() -> None:
    body = {"sku": f"SKU-{uuid.uuid4().hex[:12]}", "name": "Counted"}
    response = items_handler(http_event("POST /items", body=body), LambdaTestContext())
    assert response["statusCode"] == 201


def assert_sets_limits_and_identity_with_bound_values(prelude: str, user: Identity) -> None:
    """One SELECT sets the limits, the role and the claims, every value a bound parameter."""
    assert prelude.startswith("SELECT set_config('statement_timeout', $1, true)"), prelude
    assert "set_config('role', $" in prelude
    assert "set_config('request.jwt.claims', $" in prelude
    assert str(user.user_id) not in prelude  # the claims are bound, never spliced into SQL


def test_orm_create_uses_one_login_and_one_transaction(
    stack: LocalStack, as_user: Identity
) -> None:
    logins, statements = measure(stack, create_item)

    assert logins == 1
    assert [s.split()[0].upper() for s in statements] == ["BEGIN", "SELECT", "INSERT", "COMMIT"]
    assert_sets_limits_and_identity_with_bound_values(statements[1], as_user)
    assert "RETURNING" in statements[2]


def test_as_the_login_role_the_limits_are_set_local(stack: LocalStack) -> None:
    def write_as_the_login_role() -> None:
        with acting_as_login_role(), transaction() as conn:
            conn.execute(text("SELECT 2"))  # `SELECT 1` is PgBouncer's own, left out of the log

    _, statements = measure(stack, write_as_the_login_role)

    assert [s.split()[0].upper() for s in statements] == ["BEGIN", "SET", "SELECT", "COMMIT"]
    assert statements[1].startswith("SET LOCAL statement_timeout")


def test_read_is_one_bounded_read_only_statement_without_begin_or_commit(
    stack: LocalStack, as_user: Identity
) -> None:
    created = body_of(
        items_handler(
            http_event("POST /items", body={"sku": f"SKU-{uuid.uuid4().hex[:12]}", "name": "Read"}),
            LambdaTestContext(),
        )
    )

    logins, statements = measure(
        stack,
        lambda: items_handler(
            http_event("GET /items/{item_id}", path=f"/items/{created['id']}"), LambdaTestContext()
        ),
    )

    assert logins == 1
    assert len(statements) == 2, statements
    assert_sets_limits_and_identity_with_bound_values(statements[0], as_user)
    assert "set_config('transaction_read_only'" in statements[0]
    assert statements[1].upper().startswith("SELECT")


def test_control_expire_on_commit_costs_a_second_login(stack: LocalStack) -> None:
    def create_then_read_with_sqlalchemy_defaults() -> None:
        with Session(get_engine()) as session:  # expire_on_commit=True
            item = Item(sku=f"SKU-{uuid.uuid4().hex[:12]}", name="Expired")
            session.add(item)
            session.commit()
            assert item.id > 0  # reloads the expired object over a new connection

    logins, statements = measure(stack, create_then_read_with_sqlalchemy_defaults)

    assert logins == 2
    assert any(s.upper().startswith("SELECT") for s in statements)


REQUESTS: dict[str, tuple[Callable[[int], tuple[str, dict[str, Any]]], int]] = {
    # route: (event for an existing item id, exchanges after login)
    "health": (lambda _: ("GET /health", {}), 1),
    "connections": (lambda _: ("GET /connections", {}), 1),
    "items list": (lambda _: ("GET /items", {"query": "limit=5"}), 1),
    "items get": (lambda item_id: ("GET /items/{item_id}", {"path": f"/items/{item_id}"}), 1),
    "items create": (
        lambda _: ("POST /items", {"body": {"sku": f"X-{uuid.uuid4().hex[:12]}", "name": "x"}}),
        2,
    ),
    "items update": (
        lambda item_id: (
            "PATCH /items/{item_id}",
            {"path": f"/items/{item_id}", "body": {"quantity": 2}},
        ),
        2,
    ),
    "items delete": (lambda item_id: ("DELETE /items/{item_id}", {"path": f"/items/{item_id}"}), 2),
}
SERVICE_ROLE_ROUTES = {"GET /connections"}


def invoke(route: str, **event: Any) -> dict[str, Any]:
    return dict(handler_for(route)(http_event(route, **event), LambdaTestContext()))


@pytest.mark.parametrize("request_name", REQUESTS)
def test_reads_take_one_exchange_and_writes_two_after_the_login(
    database: LocalStack,
    exchange_counter: ExchangeCounter,
    monkeypatch: pytest.MonkeyPatch,
    request_name: str,
    tokens: Tokens,
    pool_mode: str,
) -> None:
    monkeypatch.setenv("DATABASE_URL", exchange_counter.url(database.pooler_url()))
    reset_caches()
    created = invoke("POST /items", body={"sku": f"X-{uuid.uuid4().hex[:12]}", "name": "x"})
    invoke("GET /health")  # both engines initialised: their first connection runs extra queries
    mark = exchange_counter.mark()
    build_event, expected = REQUESTS[request_name]
    name, event = build_event(body_of(created)["id"])
    if name in SERVICE_ROLE_ROUTES:
        event["token"] = tokens.service_role()

    response = invoke(name, **event)

    assert response["statusCode"] in (200, 201, 204)
    [connection] = exchanged(exchange_counter, mark, pool_mode)
    login = LOGIN_EXCHANGES if pool_mode == "nullpool" else 0
    assert (connection.login, connection.statements) == (login, expected)
    reset_caches()


SCOPES: dict[str, tuple[Callable[[], AbstractContextManager[Connection]], int]] = {
    # how a request reaches the database: (scope, exchanges after login)
    "read in autocommit": (autocommit_connection, 1),
    "write in a transaction": (transaction, 2),
}


@pytest.mark.parametrize("acting", ["login role", "anon", "user"])
@pytest.mark.parametrize("scope_name", SCOPES)
def test_acting_as_a_user_costs_no_extra_exchange(
    database: LocalStack,
    exchange_counter: ExchangeCounter,
    monkeypatch: pytest.MonkeyPatch,
    as_user: Identity,
    scope_name: str,
    acting: str,
    pool_mode: str,
) -> None:
    monkeypatch.setenv("DATABASE_URL", exchange_counter.url(database.pooler_url()))
    reset_caches()
    scope, expected = SCOPES[scope_name]
    identity = {"login role": None, "anon": ANONYMOUS, "user": as_user}[acting]
    in_scope = acting_as_login_role() if identity is None else acting_as(identity)
    with in_scope:
        with scope() as warm_up:  # the engine's first connection runs the dialect's queries
            warm_up.execute(text("SELECT 1"))
        mark = exchange_counter.mark()
        with scope() as conn:
            who = conn.execute(WHO_AM_I).one()

    [connection] = exchanged(exchange_counter, mark, pool_mode)
    login = LOGIN_EXCHANGES if pool_mode == "nullpool" else 0
    assert (connection.login, connection.statements) == (login, expected)
    if identity is None:
        assert (who.role, who.claims or None) == (database.config.user, None)
    else:
        assert (who.role, who.claims) == (identity.role, identity.claims_json())
    reset_caches()


@pytest.fixture
def threads_started(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads started from now on, in this process."""
    started: list[str] = []
    original_start = threading.Thread.start

    def counting_start(thread: threading.Thread) -> None:
        started.append(thread.name)
        original_start(thread)

    monkeypatch.setattr(threading.Thread, "start", counting_start)
    return started


def test_fastapi_function_starts_no_thread_per_request(
    database: LocalStack, monkeypatch: pytest.MonkeyPatch, threads_started: list[str]
) -> None:
    # A host name, as every deployed URL has: psycopg resolves it in the event loop's default
    # executor, a worker thread, which is started once only while the loop outlives requests.
    named_host = database.pooler_url().replace("@127.0.0.1:", "@localhost:")
    monkeypatch.setenv("DATABASE_URL", named_host)
    reset_caches()
    created = invoke("POST /items", body={"sku": f"T-{uuid.uuid4().hex[:12]}", "name": "t"})
    path = f"/items/{body_of(created)['id']}"
    threads_started.clear()  # the deadline watchdog starts once per process

    for _ in range(20):
        assert invoke("GET /items/{item_id}", path=path)["statusCode"] == 200
        assert (
            invoke("PATCH /items/{item_id}", path=path, body={"quantity": 1})["statusCode"] == 200
        )

    assert threads_started == []
    reset_caches()


def test_control_a_sync_route_starts_a_thread_per_request(threads_started: list[str]) -> None:
    app = FastAPI()

    @app.get("/items/{item_id}")
    def sync_route(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    naive = Mangum(app, lifespan="off")
    for _ in range(3):
        response = naive(http_event("GET /items/{item_id}", path="/items/1"), LambdaTestContext())  # type: ignore[arg-type]
        assert response["statusCode"] == 200

    assert len(threads_started) >= 3
