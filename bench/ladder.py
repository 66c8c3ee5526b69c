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
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg
from fastapi import APIRouter, Response
from mangum import Mangum
from sqlalchemy import text
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
from shared._deadline import invocation_deadline
from shared._dependencies import UserDep
from shared._driver import AsyncPoolerConnection
from shared._engine import autocommit_connection, get_async_engine
from shared._fastapi_app import create_app, lambda_handler
from shared._identity import ANONYMOUS, acting_as
from shared._sessions import async_read_session
from shared._settings import get_settings
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
LADDERS = {
    "items get": ITEMS_GET_STEPS,
    "items get, no database": FRAMEWORK_STEPS,
    "health": HEALTH_STEPS,
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


def measure_ladders(project: ProjectFunctions, url: str, rounds: int, warmup: int) -> Ladders:
    """Both ladders, one after the other."""
    loop = asyncio.new_event_loop()
    try:
        items_get = _measure(_items_get_steps(project, url, loop), rounds, warmup)
    finally:
        loop.close()
    return {
        "items get": items_get,
        "items get, no database": _measure(_framework_steps(project), rounds, warmup),
        "health": _measure(_health_steps(project, url), rounds, warmup),
    }
