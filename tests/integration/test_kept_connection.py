"""With DB_KEEP_CONNECTION a warm instance reuses its pooler connection, and a stale one is never
a user's error.

Each fault is real (tests/fixtures/faults.py, PgBouncer's admin console) and happens between
two requests of one instance, the way a frozen Lambda instance meets it when it thaws. The
plain function (the sync engine) and the FastAPI function (the asyncio engine) are asked alike.
Connections opened are counted by the engines' `connect` event; which mechanism replaced the
connection, by what `shared._kept_connection` and `shared._driver` log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, Engine, event, insert, select, text
from sqlalchemy.exc import OperationalError

from functions.items.models import Item
from infra.local_stack import LocalStack
from shared import _snapstart as snapstart
from shared._deadline import DEADLINE_MARGIN_S, invocation_deadline
from shared._driver import CommitOutcomeUnknownError
from shared._engine import (
    autocommit_connection,
    build_engine,
    get_async_engine,
    get_engine,
    transaction,
)
from shared._error_mapping import error_response
from shared._sessions import READ_ONLY_OPTIONS
from shared._settings import get_settings
from tests.fixtures.faults import pooler_frozen, restart_pooler, restart_postgres
from tests.fixtures.lambda_events import LambdaTestContext, body_of, http_event
from tests.fixtures.pgbouncer import admin_console, show, show_for
from tests.fixtures.service import handler_for
from tests.fixtures.stack import TEST_POOL_SIZE, reset_caches
from tests.integration.test_transaction_pooling import watch_pool

pytestmark = pytest.mark.usefixtures("as_user", "kept_connection")

REMAINING_MS = 4_000
DEADLINE_S = REMAINING_MS / 1000 - DEADLINE_MARGIN_S
SLACK_S = 0.3
RESEND_DEADLINE_S = 9.0
"""Room for restarting PgBouncer inside a request and still connecting again after it."""
MAX_IDLE_S = 1.0
CLIENT_IDLE_TIMEOUT_S = 1
REPLACED = "kept database connection replaced"
RESENT = "connection lost before a transaction's first exchange: sent it again"

ROUTES = {
    "plain function": ("GET /health", None),
    "fastapi function": ("GET /items", "limit=1"),
}


def invoke(route_name: str) -> dict[str, Any]:
    route, query = ROUTES[route_name]
    handler = handler_for(route)  # imported first: a cold import takes from no request's time
    return dict(handler(http_event(route, query=query), LambdaTestContext(REMAINING_MS)))


def count_connects() -> list[object]:
    """Grows by one each time either engine opens a connection."""
    opened: list[object] = []
    for engine in (get_engine(), get_async_engine().sync_engine):
        event.listen(engine, "connect", lambda *_: opened.append(None))
    return opened


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [vars(r)["reason"] for r in caplog.records if r.getMessage() == REPLACED]


def restore_client_idle_timeout(stack: LocalStack, seconds: int) -> None:
    # One console per SET: an idle console would itself be closed by the short timeout.
    with admin_console(stack) as admin:
        admin.execute(f"SET client_idle_timeout = {seconds}")


@pytest.fixture
def short_client_idle_timeout(stack: LocalStack) -> Iterator[Callable[[], None]]:
    """PgBouncer closes clients idle for CLIENT_IDLE_TIMEOUT_S during the call's wait."""
    with admin_console(stack) as admin:
        config = {row["key"]: row["value"] for row in show(admin, "CONFIG")}
    before = config["client_idle_timeout"]

    def wait_for_it() -> None:
        restore_client_idle_timeout(stack, CLIENT_IDLE_TIMEOUT_S)
        time.sleep(CLIENT_IDLE_TIMEOUT_S)
        # PgBouncer checks timeouts about once a second, later on a loaded machine: wait until
        # it has closed every idle client of the database, as it will have by the next request.
        deadline = time.monotonic() + 15
        while show_for(stack, "CLIENTS") and time.monotonic() < deadline:
            time.sleep(0.2)

    yield wait_for_it
    restore_client_idle_timeout(stack, int(float(before)))


type Staleness = Callable[[LocalStack, Callable[[], None]], None]
STALENESS: dict[str, tuple[Staleness, str]] = {
    # what happens between the two requests: (how, the reason the connection is replaced)
    "pooler restarted": (
        lambda stack, _idle: restart_pooler(stack, down_s=0.2),
        "closed by the server or pooler while idle",
    ),
    "pooler's client_idle_timeout expired": (
        lambda _stack, idle_timeout: idle_timeout(),
        "closed by the server or pooler while idle",
    ),
    "idle longer than the setting": (
        lambda _stack, _idle: time.sleep(MAX_IDLE_S + 0.2),
        "idle longer than DB_KEEP_CONNECTION_MAX_IDLE_S",
    ),
}


def test_a_warm_instance_reuses_its_connection(caplog: pytest.LogCaptureFixture) -> None:
    opened = count_connects()
    first = {name: invoke(name)["statusCode"] for name in ROUTES}
    connected_by_the_first = len(opened)

    second = {name: invoke(name)["statusCode"] for name in ROUTES}

    assert set(first.values()) == set(second.values()) == {200}
    assert connected_by_the_first == 2  # one per engine
    assert len(opened) == 2  # the second requests logged in to nothing
    assert REPLACED not in messages(caplog)


@pytest.mark.parametrize("route_name", ROUTES)
@pytest.mark.parametrize("staleness", STALENESS)
def test_a_stale_connection_is_replaced_before_use(
    stack: LocalStack,
    short_client_idle_timeout: Callable[[], None],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    route_name: str,
    staleness: str,
) -> None:
    make_stale, reason = STALENESS[staleness]
    if staleness == "idle longer than the setting":
        monkeypatch.setenv("DB_KEEP_CONNECTION_MAX_IDLE_S", str(MAX_IDLE_S))
        reset_caches()
    opened = count_connects()
    assert invoke(route_name)["statusCode"] == 200
    before = len(opened)
    make_stale(stack, short_client_idle_timeout)
    caplog.clear()

    answer = invoke(route_name)

    assert answer["statusCode"] == 200, body_of(answer)
    assert len(opened) - before == 1  # one reconnect, nothing more
    assert reasons(caplog) == [reason]
    assert RESENT not in messages(caplog)  # found before any byte was sent


@pytest.mark.parametrize("route_name", ROUTES)
def test_postgres_restarted_behind_the_pooler_costs_no_failure(
    stack: LocalStack, caplog: pytest.LogCaptureFixture, route_name: str
) -> None:
    opened = count_connects()
    assert invoke(route_name)["statusCode"] == 200
    before = len(opened)
    restart_postgres(stack, down_s=0.2)

    answer = invoke(route_name)

    assert answer["statusCode"] == 200, body_of(answer)
    assert len(opened) - before <= 1  # PgBouncer keeps its clients through it


@pytest.mark.parametrize("route_name", ROUTES)
def test_a_frozen_pooler_is_503_in_time_and_the_next_request_succeeds(
    stack: LocalStack, route_name: str
) -> None:
    assert invoke(route_name)["statusCode"] == 200

    with pooler_frozen(stack):
        started = time.monotonic()
        frozen = invoke(route_name)
        elapsed = time.monotonic() - started
    thawed = invoke(route_name)

    assert frozen["statusCode"] == 503
    assert elapsed <= DEADLINE_S + SLACK_S
    assert thawed["statusCode"] == 200, body_of(thawed)


def run_async[T](coroutine: Coroutine[Any, Any, T]) -> T:
    loop = asyncio.new_event_loop()  # not asyncio.run: it would unset this thread's loop
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


def stored(stack: LocalStack, sku: str) -> int:
    with psycopg.connect(stack.direct_url(), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM items WHERE sku = %s", (sku,)).fetchone()
    assert row is not None
    return int(row[0])


def read_only_autocommit() -> AbstractContextManager[Connection]:
    return get_engine().connect().execution_options(**READ_ONLY_OPTIONS)


SYNC_SCOPES: dict[str, tuple[Callable[[], AbstractContextManager[Connection]], bool]] = {
    # how the request reaches the database: (scope, may its first statement be resent)
    "transaction": (transaction, True),
    "read-only autocommit": (read_only_autocommit, True),
    "autocommit write": (autocommit_connection, False),
}


def first_statement(scope_name: str, sku: str) -> Any:
    if scope_name == "read-only autocommit":
        return select(Item.id).where(Item.sku == sku)
    return insert(Item).values(sku=sku, name="resent")


@pytest.mark.parametrize("warm", [True, False], ids=["reused", "fresh"])
@pytest.mark.parametrize("scope_name", SYNC_SCOPES)
def test_first_exchange_lost_on_a_reused_connection_is_resent_once(
    stack: LocalStack, caplog: pytest.LogCaptureFixture, scope_name: str, warm: bool
) -> None:
    scope, resendable = SYNC_SCOPES[scope_name]
    if warm:
        with transaction() as conn:
            conn.execute(text("SELECT 1"))
    sku = f"KC-{uuid.uuid4().hex[:12]}"

    def lost_after_checkout() -> None:
        with invocation_deadline(RESEND_DEADLINE_S), scope() as conn:
            restart_pooler(stack, down_s=0.1)  # the checkout's check saw a live connection
            conn.execute(first_statement(scope_name, sku))

    if resendable and warm:
        lost_after_checkout()
        assert messages(caplog).count(RESENT) == 1
    else:
        with pytest.raises(OperationalError) as raised:
            lost_after_checkout()
        assert error_response(raised.value).status_code == 503
        assert RESENT not in messages(caplog)
    expected_rows = int(resendable and warm and scope_name != "read-only autocommit")
    assert stored(stack, sku) == expected_rows


@pytest.mark.parametrize("warm", [True, False], ids=["reused", "fresh"])
def test_asyncio_engine_resends_the_same_way(
    stack: LocalStack, caplog: pytest.LogCaptureFixture, warm: bool
) -> None:
    sku = f"KC-{uuid.uuid4().hex[:12]}"

    async def write() -> None:
        engine = get_async_engine()
        if warm:
            async with engine.begin() as conn:
                await conn.execute(text("SELECT 1"))
        with invocation_deadline(RESEND_DEADLINE_S):
            async with engine.begin() as conn:
                restart_pooler(stack, down_s=0.1)
                await conn.execute(insert(Item).values(sku=sku, name="resent"))

    if warm:
        run_async(write())
    else:
        with pytest.raises(OperationalError):
            run_async(write())

    assert stored(stack, sku) == int(warm)
    assert messages(caplog).count(RESENT) == int(warm)


def test_a_lost_commit_on_a_reused_connection_is_never_resent(
    stack: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    with transaction() as conn:
        conn.execute(text("SELECT 1"))
    sku = f"KC-{uuid.uuid4().hex[:12]}"

    with (  # noqa: PT012 - the INSERT must succeed before the pooler stops
        ExitStack() as thawed_at_the_end,
        invocation_deadline(DEADLINE_S),
        pytest.raises(OperationalError) as raised,
        transaction() as conn,
    ):
        conn.execute(insert(Item).values(sku=sku, name="in flight"))
        thawed_at_the_end.enter_context(pooler_frozen(stack))

    assert isinstance(raised.value.orig, CommitOutcomeUnknownError)
    assert error_response(raised.value).body["code"] == "commit_outcome_unknown"
    assert RESENT not in messages(caplog)
    with transaction() as conn:  # the instance goes on, on a new connection
        assert conn.execute(text("SELECT 1")).scalar_one() == 1


INSTANCES = 8
REQUESTS_PER_INSTANCE = 10


def test_a_burst_of_instances_holds_one_client_each_and_shares_the_pool(stack: LocalStack) -> None:
    """Each thread stands for one warm instance with its own engine (as each Lambda instance
    has): every request succeeds, each instance logs in once, PgBouncer never has more
    clients than instances nor more server connections than its pool."""
    engines = [build_engine(stack.pooler_url(), get_settings()) for _ in range(INSTANCES)]
    logins = [count_engine_connects(engine) for engine in engines]

    def instance(engine: Engine) -> int:
        answered = 0
        for _ in range(REQUESTS_PER_INSTANCE):
            with engine.begin() as conn:
                answered += conn.execute(text("SELECT 1 FROM pg_sleep(0.05)")).scalar_one()
        return answered

    with admin_console(stack) as admin, ThreadPoolExecutor(max_workers=INSTANCES) as pool:
        # Idle clients already there (another engine's kept connection) are not this burst's.
        already = watch_pool(admin, stack.config.database, lambda: False, rounds=1).clients
        running = [pool.submit(instance, engine) for engine in engines]
        peak = watch_pool(admin, stack.config.database, lambda: all(r.done() for r in running))
        answered = [future.result() for future in running]
    for engine in engines:
        engine.dispose()

    assert answered == [REQUESTS_PER_INSTANCE] * INSTANCES
    assert [len(opened) for opened in logins] == [1] * INSTANCES
    assert 0 < peak.servers <= TEST_POOL_SIZE
    assert INSTANCES - 1 <= peak.clients - already <= INSTANCES  # the console is not counted


def count_engine_connects(engine: Engine) -> list[object]:
    opened: list[object] = []
    event.listen(engine, "connect", lambda *_: opened.append(None))
    return opened


def sockets_to(port: int) -> int:
    """This process's established TCP connections to `port`, as the kernel lists them."""
    ours = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed since listed
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                ours.add(target.removeprefix("socket:[").removesuffix("]"))
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            count += remote_port == port and fields[3] == ESTABLISHED and fields[9] in ours
    return count


ESTABLISHED = "01"


def test_no_connection_is_open_when_the_snapshot_is_taken(stack: LocalStack) -> None:
    """Init that queried the database leaves a kept connection per engine; the before-snapshot
    hook closes them, and the restored copy connects anew."""
    assert invoke("plain function")["statusCode"] == 200
    assert invoke("fastapi function")["statusCode"] == 200
    kept_during_init = sockets_to(stack.config.pooler_port)

    snapstart.warm_before_snapshot()
    in_the_snapshot = sockets_to(stack.config.pooler_port)
    snapstart.refresh_after_restore()
    restored = invoke("plain function")

    assert kept_during_init == 2
    assert in_the_snapshot == 0
    assert restored["statusCode"] == 200
