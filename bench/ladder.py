"""Where a warm request spends its time: the same read, one layer added per step.

Each step does what the step before it does plus one layer of the project's path, all in
interleaved rounds, so the differences of their medians say what each layer costs. Two ladders:

`GET /items/{id}` (FastAPI):
1. raw psycopg: connect, SELECT, close (the warm table's reference);
2. acting as the user: the same SELECT after one `set_config` of the statement timeout, role
   and claims, in one pipeline, as `shared._driver` sends it (what row-level security needs);
3. asyncio: `shared._driver.AsyncPoolerConnection`, as the FastAPI functions connect;
4. SQLAlchemy Core: the project's asyncio engine (NullPool, its events, the deadline watch);
5. the ORM: `session.get(Item, id)` in `async_read_session`, as the route reads;
6. the function: token check, FastAPI, Mangum, the Lambda boundary and its log lines.

`GET /items/{id}` without the database (the framework's own cost; the route answers a fixed row):
1. the boundary's event check (pydantic validates the API Gateway event);
2. + Mangum, serving an ASGI app that answers fixed JSON bytes;
3. + FastAPI: routing, the path parameter's validation, the route (a fixed JSON `Response`);
4. + the user dependency: the bearer token checked (a token already verified is cached);
5. + the response model: the row validated into `ItemRead` and serialized, as the route does;
6. + the boundary: deadline, `anon` scope, `no-store`, Powertools's request context and logs.

`GET /health` (a plain handler):
1. raw psycopg: connect, SELECT 1, close;
2. acting as anon: one `set_config` of the statement timeout, role `anon` and its claims
   pipelined with the SELECT, as `shared._driver` sends a single read with no identity;
3. SQLAlchemy Core: `autocommit_connection()` on the project's engine, within a deadline;
4. the function: the Lambda boundary (event check, request id in the logs, JSON answer).

The same two reads on a kept connection (`DB_KEEP_CONNECTION`), where the login is gone and what
remains is the per-request cost of each layer:
1. raw psycopg: the SELECT on a connection opened once;
2. acting as the user (or anon): the `set_config` prelude pipelined with it;
3. SQLAlchemy Core with a pool of one: the project's driver classes (their prelude), no listeners;
4. the kept pool's checkout check: socket poll and idle age (`shared._kept_connection`);
5. the deadline watch registered at checkout and cancelled at checkin;
6. asyncio (items only): the asyncio engine with all of the above;
7. the ORM (items only): `session.get` in a read session over that engine;
8. the function: the project's handler with the setting on.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import psycopg
from fastapi import APIRouter, Response
from mangum import Mangum
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from starlette.types import Receive, Scope, Send

from bench.contenders import (
    ITEM_COLUMNS,
    RAW_CONNECT_ARGS,
    BenchError,
    ProjectFunctions,
    Request,
)
from bench.stack import BENCH_USER
from functions.items.models import Item
from functions.items.routes import ItemId
from functions.items.schemas import ItemRead
from shared._boundary import check_http_event
from shared._connect import connect_args, open_connection
from shared._database_url import to_sqlalchemy_url
from shared._deadline import invocation_deadline
from shared._dependencies import UserDep
from shared._driver import AsyncPoolerConnection
from shared._engine import (
    _stop_watching,
    _watch_until_deadline,
    autocommit_connection,
    get_async_engine,
)
from shared._fastapi_app import create_app, lambda_handler
from shared._identity import ANONYMOUS, Identity, acting_as
from shared._kept_connection import keep_one_connection, kept_pool
from shared._sessions import READ_ONLY_OPTIONS, ReadSession, async_read_session
from shared._settings import ConnectionMode, get_settings
from tests.fixtures.lambda_events import LambdaTestContext, http_event

__all__ = ["LADDERS", "Ladders", "measure_ladders"]

ITEMS_GET_STEPS = (
    "raw psycopg",
    "+ acting as the user",
    "+ asyncio",
    "+ SQLAlchemy Core",
    "+ the ORM",
    "+ the function",
)
FRAMEWORK_STEPS = (
    "event check",
    "+ Mangum (ASGI app answering fixed bytes)",
    "+ FastAPI (routing, path parameter, route)",
    "+ the user dependency (token check)",
    "+ the response model (ItemRead)",
    "+ the boundary (deadline, scope, logs)",
)
HEALTH_STEPS = ("raw psycopg", "+ acting as anon", "+ SQLAlchemy Core", "+ the function")
KEPT_CORE_STEPS = (
    "+ SQLAlchemy Core, a pool of one",
    "+ the checkout check (socket poll, idle age)",
    "+ the deadline watch per checkout",
)
KEPT_ITEMS_GET_STEPS = (
    "raw psycopg, kept connection",
    "+ acting as the user",
    *KEPT_CORE_STEPS,
    "+ asyncio",
    "+ the ORM",
    "+ the function",
)
KEPT_HEALTH_STEPS = (
    "raw psycopg, kept connection",
    "+ acting as anon",
    *KEPT_CORE_STEPS,
    "+ the function",
)
LADDERS = {
    "items get": ITEMS_GET_STEPS,
    "items get, no database": FRAMEWORK_STEPS,
    "health": HEALTH_STEPS,
    "items get, kept connection": KEPT_ITEMS_GET_STEPS,
    "health, kept connection": KEPT_HEALTH_STEPS,
}
"""Each ladder's steps, by the name of the warm table's route it takes apart."""
SELECT = f"SELECT {ITEM_COLUMNS} FROM items WHERE id = %s"
ACT_AS = (
    "SELECT set_config('statement_timeout', %s, true), set_config('role', %s, true),"
    " set_config('request.jwt.claims', %s, true)"
)
DEADLINE_S = 10.0

type Ladders = dict[str, list[list[float]]]
"""Seconds per request of each step, by ladder name ("items get", "health")."""


def _items_get_steps(
    project: ProjectFunctions, url: str, loop: asyncio.AbstractEventLoop
) -> list[Request]:
    """The steps of ITEMS_GET_STEPS as thunks that raise BenchError unless they read the row."""
    item_id = project.read_id
    timeout_ms = get_settings().db_statement_timeout_ms
    acting = [str(timeout_ms), BENCH_USER.role, json.dumps(BENCH_USER.claims)]

    def raw() -> None:
        with psycopg.connect(url, autocommit=True, **RAW_CONNECT_ARGS) as conn:
            _check(conn.execute(SELECT, [item_id]).fetchall())

    def raw_acting() -> None:
        with psycopg.connect(url, autocommit=True, **RAW_CONNECT_ARGS) as conn:
            with conn.pipeline():
                conn.execute(ACT_AS, acting)
                cursor = conn.execute(SELECT, [item_id])
            _check(cursor.fetchall())

    async def driver() -> None:
        conn = await AsyncPoolerConnection.open(timeout_ms, conninfo=url, **RAW_CONNECT_ARGS)
        await conn.set_autocommit(True)  # a single read, as read sessions send it
        async with conn:
            _check(await (await conn.execute(SELECT, [item_id])).fetchall())

    async def core() -> None:
        query = text(f"SELECT {ITEM_COLUMNS} FROM items WHERE id = :id")
        async with get_async_engine().connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            _check((await autocommit.execute(query, {"id": item_id})).all())

    async def orm() -> None:
        async with async_read_session(BENCH_USER) as session:
            _check([await session.get(Item, item_id)])

    def as_user(step: Callable[[], Awaitable[None]]) -> Request:
        def request() -> None:
            with invocation_deadline(DEADLINE_S), acting_as(BENCH_USER):
                loop.run_until_complete(step())

        return request

    function = project.prepare("items get")
    return [raw, raw_acting, as_user(driver), as_user(core), as_user(orm), function]


FIXED_ROW = {
    "id": 1,
    "sku": "BENCH-FIXED",
    "name": "Bench item",
    "quantity": 0,
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-01T00:00:00Z",
}


def _framework_steps(project: ProjectFunctions) -> list[Request]:
    """The steps of FRAMEWORK_STEPS: the items function's layers over a fixed row."""
    event = http_event(
        "GET /items/{item_id}", path=f"/items/{project.read_id}", token=project.user_token
    )
    row = ItemRead.model_validate(FIXED_ROW)
    body = row.model_dump_json().encode()

    async def fixed_bytes(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    routing, dependency, response_model = APIRouter(), APIRouter(), APIRouter()

    @routing.get("/items/{item_id}")
    async def get_fixed_bytes(item_id: ItemId) -> Response:
        return Response(body, media_type="application/json")

    @dependency.get("/items/{item_id}")
    async def get_fixed_bytes_as_user(item_id: ItemId, caller: UserDep) -> Response:
        return Response(body, media_type="application/json")

    @response_model.get("/items/{item_id}")
    async def get_fixed_row(item_id: ItemId, caller: UserDep) -> ItemRead:
        return ItemRead.model_validate(row)

    def asgi(app: Any) -> Callable[[dict[str, Any], Any], Any]:
        return Mangum(app, lifespan="off")

    def through(handler: Callable[[dict[str, Any], Any], Any], *, check: bool = True) -> Request:
        def request() -> None:
            if check:
                check_http_event(event)
            response = handler(event, LambdaTestContext())
            if response["statusCode"] != 200:
                raise BenchError(f"framework ladder: {response}")

        return request

    def checked() -> None:
        check_http_event(event)

    full_app = create_app(response_model, title="bench")
    return [
        checked,
        through(asgi(fixed_bytes)),
        through(asgi(create_app(routing, title="bench"))),
        through(asgi(create_app(dependency, title="bench"))),
        through(asgi(full_app)),
        through(lambda_handler(full_app), check=False),  # the boundary checks the event itself
    ]


def _health_steps(project: ProjectFunctions, url: str) -> list[Request]:
    """The steps of HEALTH_STEPS as thunks that raise BenchError unless they read a row."""
    timeout_ms = get_settings().db_statement_timeout_ms
    acting = [str(timeout_ms), ANONYMOUS.role, ANONYMOUS.claims_json()]

    def raw() -> None:
        with psycopg.connect(url, autocommit=True, **RAW_CONNECT_ARGS) as conn:
            _check(conn.execute("SELECT 1").fetchall())

    def raw_anon() -> None:
        with psycopg.connect(url, autocommit=True, **RAW_CONNECT_ARGS) as conn:
            with conn.pipeline():
                conn.execute(ACT_AS, acting)
                cursor = conn.execute("SELECT 1")
            _check(cursor.fetchall())

    def core() -> None:
        with invocation_deadline(DEADLINE_S), autocommit_connection() as conn:
            _check(conn.execute(text("SELECT 1")).all())

    return [raw, raw_anon, core, project.prepare("health")]


def _kept_engine(url: str, *, check: bool, watch: bool) -> Engine:
    """A pool of one over the project's driver classes, with the kept pool's listeners asked."""
    settings = get_settings()
    sa_url = to_sqlalchemy_url(url)
    options = {"connect_args": connect_args(sa_url, ConnectionMode.TRANSACTION, settings)}
    engine = create_engine(sa_url, hide_parameters=True, **options, **kept_pool())
    _listen(engine, check=check, watch=watch)
    return engine


def _kept_async_engine(url: str) -> AsyncEngine:
    """The asyncio twin of `_kept_engine` with every listener, as the FastAPI functions keep."""
    settings = get_settings()
    sa_url = to_sqlalchemy_url(url)
    options = {"connect_args": connect_args(sa_url, ConnectionMode.TRANSACTION, settings)}
    engine = create_async_engine(sa_url, hide_parameters=True, **options, **kept_pool())
    _listen(engine.sync_engine, check=True, watch=True)
    return engine


def _listen(engine: Engine, *, check: bool, watch: bool) -> None:
    settings = get_settings()
    event.listen(engine, "do_connect", partial(open_connection, settings.db_statement_timeout_ms))
    if check:
        keep_one_connection(engine, settings.db_keep_connection_max_idle_s)
    if watch:
        event.listen(engine, "checkout", _watch_until_deadline)
        event.listen(engine, "checkin", _stop_watching)
        event.listen(engine, "close", _stop_watching)


def _kept_core_steps(
    url: str, identity: Identity, query: str, params: dict[str, Any]
) -> list[Request]:
    """KEPT_CORE_STEPS: the same autocommit read through three pools of one, layer by layer."""
    statement = text(query)

    def through(engine: Engine) -> Request:
        def request() -> None:
            with invocation_deadline(DEADLINE_S), acting_as(identity), engine.connect() as conn:
                autocommit = conn.execution_options(isolation_level="AUTOCOMMIT")
                _check(autocommit.execute(statement, params).all())

        return request

    return [
        through(_kept_engine(url, check=False, watch=False)),
        through(_kept_engine(url, check=True, watch=False)),
        through(_kept_engine(url, check=True, watch=True)),
    ]


def _kept_items_get_steps(
    kept: ProjectFunctions, url: str, loop: asyncio.AbstractEventLoop
) -> list[Request]:
    """The steps of KEPT_ITEMS_GET_STEPS, each on a connection of its own kept open."""
    item_id = kept.read_id
    timeout_ms = get_settings().db_statement_timeout_ms
    acting = [str(timeout_ms), BENCH_USER.role, json.dumps(BENCH_USER.claims)]
    raw_conn = psycopg.connect(url, autocommit=True, **RAW_CONNECT_ARGS)
    acting_conn = psycopg.connect(url, autocommit=True, **RAW_CONNECT_ARGS)
    async_engine = _kept_async_engine(url)
    orm_engine = _kept_async_engine(url).execution_options(**READ_ONLY_OPTIONS)
    query = f"SELECT {ITEM_COLUMNS} FROM items WHERE id = :id"

    def raw() -> None:
        _check(raw_conn.execute(SELECT, [item_id]).fetchall())

    def raw_acting() -> None:
        with acting_conn.pipeline():
            acting_conn.execute(ACT_AS, acting)
            cursor = acting_conn.execute(SELECT, [item_id])
        _check(cursor.fetchall())

    async def core() -> None:
        async with async_engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            _check((await autocommit.execute(text(query), {"id": item_id})).all())

    async def orm() -> None:
        async with AsyncSession(orm_engine, sync_session_class=ReadSession) as session:
            _check([await session.get(Item, item_id)])

    def as_user(step: Callable[[], Awaitable[None]]) -> Request:
        def request() -> None:
            with invocation_deadline(DEADLINE_S), acting_as(BENCH_USER):
                loop.run_until_complete(step())

        return request

    core_steps = _kept_core_steps(url, BENCH_USER, query, {"id": item_id})
    function = kept.prepare("items get")
    return [raw, raw_acting, *core_steps, as_user(core), as_user(orm), function]


def _kept_health_steps(kept: ProjectFunctions, url: str) -> list[Request]:
    """The steps of KEPT_HEALTH_STEPS, each on a connection of its own kept open."""
    timeout_ms = get_settings().db_statement_timeout_ms
    acting = [str(timeout_ms), ANONYMOUS.role, ANONYMOUS.claims_json()]
    raw_conn = psycopg.connect(url, autocommit=True, **RAW_CONNECT_ARGS)
    acting_conn = psycopg.connect(url, autocommit=True, **RAW_CONNECT_ARGS)

    def raw() -> None:
        _check(raw_conn.execute("SELECT 1").fetchall())

    def raw_anon() -> None:
        with acting_conn.pipeline():
            acting_conn.execute(ACT_AS, acting)
            cursor = acting_conn.execute("SELECT 1")
        _check(cursor.fetchall())

    core_steps = _kept_core_steps(url, ANONYMOUS, "SELECT 1", {})
    return [raw, raw_anon, *core_steps, kept.prepare("health")]


def _check(rows: Sequence[object]) -> None:
    if not rows or rows[0] is None:
        raise BenchError("a ladder's read found no row")


def _measure(steps: list[Request], rounds: int, warmup: int) -> list[list[float]]:
    """Seconds per request of each step, in interleaved rounds whose order rotates."""
    samples: list[list[float]] = [[] for _ in steps]
    for round_number in range(warmup + rounds):
        shift = round_number % len(steps)
        for index in [*range(shift, len(steps)), *range(shift)]:
            started = time.perf_counter()
            steps[index]()
            elapsed = time.perf_counter() - started
            if round_number >= warmup:
                samples[index].append(elapsed)
    return samples


def measure_ladders(
    project: ProjectFunctions, kept: ProjectFunctions, url: str, rounds: int, warmup: int
) -> Ladders:
    """Every ladder, one after the other: `project` as configured, `kept` with the setting on.

    A contender's `prepare` puts its engines in the platform's place, so the kept ladders run
    last and `project`'s engines are put back afterwards.
    """
    loop = asyncio.new_event_loop()
    try:
        items_get = _measure(_items_get_steps(project, url, loop), rounds, warmup)
        ladders = {
            "items get": items_get,
            "items get, no database": _measure(_framework_steps(project), rounds, warmup),
            "health": _measure(_health_steps(project, url), rounds, warmup),
        }
        ladders["items get, kept connection"] = _measure(
            _kept_items_get_steps(kept, url, loop), rounds, warmup
        )
        ladders["health, kept connection"] = _measure(_kept_health_steps(kept, url), rounds, warmup)
    finally:
        project.become_this_instance()
        loop.close()
    return ladders
