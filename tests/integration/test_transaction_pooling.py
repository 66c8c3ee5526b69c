"""The proof that the data layer is safe under a transaction-mode pooler, with its control.

Many clients share few server connections through PgBouncer (pool_mode=transaction). Each
client runs its own parameterised query many times and checks every answer. Two query shapes
share the same text length but not the same meaning, so a client that runs another client's
prepared statement gets a detectably wrong answer instead of a right one by luck.

The project's engine runs it connecting per request and keeping its connection
(DB_KEEP_CONNECTION), where one client connection runs the same statement across requests.
The control runs the same workload with psycopg's defaults and must break: if it ever stops
breaking, the harness is no longer a real transaction pooler and this module fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, TextClause, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from infra.local_stack import LocalStack
from shared._engine import build_engine
from shared._settings import get_settings
from tests.fixtures.pgbouncer import admin_console, show
from tests.fixtures.stack import TEST_POOL_SIZE

CLIENTS = 8
REQUESTS_PER_CLIENT = 20
# psycopg prepares a statement on its 6th execution on one connection.
STATEMENTS_PER_REQUEST = 6
HOLD_S = 1.0  # how long each client holds its transaction while the pool is watched
POOL_WATCH_S = 10.0

QUERIES: tuple[tuple[TextClause, Callable[[int], int]], ...] = (
    (text("SELECT CAST(:n AS integer) + 1000 AS answer"), lambda n: n + 1000),
    (text("SELECT CAST(:n AS integer) * 1000 AS answer"), lambda n: n * 1000),
)


@dataclass
class Outcome:
    """What the clients saw: answers checked, wrong answers, and errors by message."""

    answers: int = 0
    wrong_answers: int = 0
    errors: list[str] = field(default_factory=list)


def run_workload(engine: Engine, statements_per_request: int) -> Outcome:
    """CLIENTS threads, each making REQUESTS_PER_CLIENT transactions of its own query."""
    outcome = Outcome()

    def client(number: int) -> None:
        query, expected = QUERIES[number % len(QUERIES)]
        for request in range(REQUESTS_PER_CLIENT):
            n = number * 1000 + request
            try:
                with engine.begin() as conn:
                    for _ in range(statements_per_request):
                        answer = conn.execute(query, {"n": n}).scalar_one()
                        outcome.answers += 1
                        if answer != expected(n):
                            outcome.wrong_answers += 1
            except DBAPIError as exc:
                outcome.errors.append(str(exc.orig).splitlines()[0])

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        list(pool.map(client, range(CLIENTS)))
    return outcome


@dataclass
class PoolPeak:
    """The most clients and server connections PgBouncer's pool held at one moment."""

    clients: int = 0
    waiting: int = 0
    servers: int = 0
    modes: set[str] = field(default_factory=set)
    client_tls: set[str] = field(default_factory=set)
    """What `SHOW CLIENTS` says of each client's TLS: empty for a plain TCP client."""


def watch_pool(
    admin: psycopg.Connection[Any],
    database: str,
    done: Callable[[], bool],
    rounds: int | None = None,
) -> PoolPeak:
    """Poll `SHOW POOLS`, `SHOW SERVERS` and `SHOW CLIENTS` on `database` until `done()` (or
    for `rounds` polls)."""
    peak = PoolPeak()
    deadline = time.monotonic() + POOL_WATCH_S
    polls = 0
    while not done() and time.monotonic() < deadline and (rounds is None or polls < rounds):
        polls += 1
        pools = [row for row in show(admin, "POOLS") if row["database"] == database]
        servers = [row for row in show(admin, "SERVERS") if row["database"] == database]
        peak.clients = max(peak.clients, sum(p["cl_active"] + p["cl_waiting"] for p in pools))
        peak.waiting = max(peak.waiting, sum(p["cl_waiting"] for p in pools))
        peak.servers = max(peak.servers, len(servers))
        peak.modes |= {p["pool_mode"] for p in pools}
        clients = [row for row in show(admin, "CLIENTS") if row["database"] == database]
        peak.client_tls |= {row["tls"] for row in clients}
    return peak


@pytest.mark.usefixtures("pool_mode")
def test_clients_outnumber_server_connections(stack: LocalStack) -> None:
    """While every client holds a transaction, PgBouncer serves them all through at most its
    pool size of server connections: the others wait, they do not get one of their own."""
    engine = build_engine(stack.pooler_url(), get_settings())

    def hold_a_transaction(_: int) -> None:
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_sleep(:s)"), {"s": HOLD_S})

    with admin_console(stack) as admin, ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        # Idle clients already there: a kept connection of an earlier test's engine counts too.
        already = watch_pool(admin, stack.config.database, lambda: False, rounds=1).clients
        held = [pool.submit(hold_a_transaction, n) for n in range(CLIENTS)]
        peak = watch_pool(admin, stack.config.database, lambda: all(t.done() for t in held))
        for transaction in held:
            transaction.result()
    engine.dispose()  # a kept connection is closed, not left to the garbage collector

    assert peak.modes == {"transaction"}
    assert peak.clients - already == CLIENTS
    assert 0 < peak.servers <= TEST_POOL_SIZE < CLIENTS
    assert peak.waiting >= CLIENTS - TEST_POOL_SIZE
    assert peak.client_tls  # the clients were seen, each over TLS, as deployed ones connect
    assert all(tls.startswith("TLSv1.3/") for tls in peak.client_tls), peak.client_tls


@pytest.mark.usefixtures("pool_mode")  # a kept connection runs a statement 6+ times too
@pytest.mark.parametrize("statements_per_request", [1, STATEMENTS_PER_REQUEST])
def test_project_engine_is_safe_under_transaction_pooling(
    stack: LocalStack, statements_per_request: int
) -> None:
    engine = build_engine(stack.pooler_url(), get_settings())

    outcome = run_workload(engine, statements_per_request)
    engine.dispose()

    assert outcome.errors == []
    assert outcome.wrong_answers == 0
    assert outcome.answers == CLIENTS * REQUESTS_PER_CLIENT * statements_per_request


ControlEngine = Callable[[str], Engine]
CONTROLS: dict[str, tuple[ControlEngine, int]] = {
    # A shared engine with SQLAlchemy's default pool and psycopg's defaults.
    "default-pool": (
        lambda url: create_engine(url.replace("postgresql://", "postgresql+psycopg://")),
        1,
    ),
    # NullPool alone: a request that repeats a statement leaves it prepared on the server.
    "nullpool-only": (
        lambda url: create_engine(
            url.replace("postgresql://", "postgresql+psycopg://"), poolclass=NullPool
        ),
        STATEMENTS_PER_REQUEST,
    ),
}


@pytest.mark.parametrize("control", CONTROLS)
def test_control_psycopg_defaults_break_through_the_pooler(stack: LocalStack, control: str) -> None:
    make_engine, statements_per_request = CONTROLS[control]
    engine = make_engine(stack.pooler_url())
    # Named prepared statements pass through PgBouncer >= 1.21 when max_prepared_statements > 0.
    pooler = (
        f"{stack.pooler_version()} "
        f"(max_prepared_statements: {stack.pooler_setting('max_prepared_statements')})"
    )

    outcome = run_workload(engine, statements_per_request)
    engine.dispose()

    prepared_statement_errors = [e for e in outcome.errors if "prepared statement" in e]
    assert prepared_statement_errors or outcome.wrong_answers, (
        f"psycopg's defaults did not break on {pooler}: the harness is not as strict as a "
        "transaction pooler that does not carry prepared statements"
    )
