"""The three ways of serving each route that the benchmark compares.

- `ProjectFunctions`: the real handlers of functions/, invoked in-process with API Gateway
  v2.0 events, as the Lambda runtime invokes them; with `keep_connection`, as an instance with
  `DB_KEEP_CONNECTION` on or off (its own engines, so both modes run in the same rounds).
- `RawPsycopg`: the floor. The same SQL with psycopg on a fresh connection through the same
  pooler: reads connect, SELECT, close; writes connect, BEGIN, INSERT/UPDATE/DELETE ...
  RETURNING, COMMIT, close; as the login role, with no identity (which the project's items
  requests set, in the same exchanges) and the bench user's id written as the owner.
- `NaiveFastAPI`: the reference a tutorial would produce (bench/naive.py).

Each `prepare(route)` returns the request as a thunk, so building events stays out of timing.
Every request checks its status: a failed request is an error, never a fast sample.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from typing import Any, ClassVar

import psycopg

from bench.naive import build_naive_handler
from bench.stack import BENCH_USER
from functions.connections.handler import handler as connections_handler
from functions.health.handler import handler as health_handler
from functions.items.handler import handler as items_handler
from shared import _engine, _sessions
from shared._connection_usage import USAGE_QUERY
from shared._settings import get_settings
from tests.fixtures.lambda_events import LambdaTestContext, http_event
from tests.fixtures.stack import reset_caches
from tests.fixtures.tokens import Tokens

__all__ = [
    "APPLICATION_NAME",
    "ITEM_COLUMNS",
    "KEEP_CONNECTION_VARIABLE",
    "RAW_CONNECT_ARGS",
    "READ_ROUTES",
    "ROUTES",
    "WRITE_ROUTES",
    "BenchError",
    "Contender",
    "NaiveFastAPI",
    "ProjectFunctions",
    "ProjectFunctionsWithoutMetrics",
    "RawPsycopg",
    "Request",
]

READ_ROUTES = ("health", "connections", "items list", "items get")
WRITE_ROUTES = ("items create", "items update", "items delete")
ROUTES = READ_ROUTES + WRITE_ROUTES
APPLICATION_NAME = "bench"
KEEP_CONNECTION_VARIABLE = "DB_KEEP_CONNECTION"
_skus = itertools.count()

type Request = Callable[[], None]
type Handler = Callable[[dict[str, Any], Any], Mapping[str, Any]]


class BenchError(RuntimeError):
    """A request of the benchmark failed, so its timings would mean nothing."""


def _new_sku() -> str:
    return f"BENCH-{os.getpid()}-{next(_skus)}"


class Contender:
    """One way of serving the routes; `item_id` is the row the write routes work on."""

    name: str

    def __init__(self, read_id: int) -> None:
        self.read_id = read_id
        self.item_id: int | None = None

    def prepare(self, route: str) -> Request:
        raise NotImplementedError

    def _write_id(self) -> int:
        if self.item_id is None:
            raise BenchError("update and delete need a created item")
        return self.item_id


class _LambdaHandlers(Contender):
    """Invokes Lambda handlers with the stored API Gateway events."""

    EXPECTED_STATUS: ClassVar[dict[str, int]] = {
        "items create": 201,
        "items delete": 204,
    }
    service_token: str | None = None
    """The bearer token for /connections, which answers only the service role."""
    user_token: str | None = None
    """The bench user's bearer token for the items routes (the naive function ignores it)."""

    def handler_for(self, route: str) -> Handler:
        raise NotImplementedError

    def prepare(self, route: str) -> Request:
        event = self._event(route)
        handler = self.handler_for(route)
        expected = self.EXPECTED_STATUS.get(route, 200)

        def request() -> None:
            response = handler(event, LambdaTestContext())
            if response["statusCode"] != expected:
                raise BenchError(f"{self.name} {route}: {response}")
            if route == "items create":
                self.item_id = int(json.loads(response["body"])["id"])

        return request

    def _event(self, route: str) -> dict[str, Any]:
        match route:
            case "health":
                return http_event("GET /health")
            case "connections":
                return http_event("GET /connections", token=self.service_token)
            case "items list":
                return http_event("GET /items", query="limit=20", token=self.user_token)
            case "items get":
                return http_event(
                    "GET /items/{item_id}", path=f"/items/{self.read_id}", token=self.user_token
                )
            case "items create":
                return http_event(
                    "POST /items",
                    body={"sku": _new_sku(), "name": "Bench item"},
                    token=self.user_token,
                )
            case "items update":
                return http_event(
                    "PATCH /items/{item_id}",
                    path=f"/items/{self._write_id()}",
                    body={"quantity": 7},
                    token=self.user_token,
                )
            case "items delete":
                return http_event(
                    "DELETE /items/{item_id}",
                    path=f"/items/{self._write_id()}",
                    token=self.user_token,
                )
        raise ValueError(route)


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """`name` set to `value` in the environment and the settings read anew, for the block."""
    saved = os.environ.get(name)
    os.environ[name] = value
    get_settings.cache_clear()
    try:
        yield
    finally:
        if saved is None:
            del os.environ[name]
        else:
            os.environ[name] = saved
        get_settings.cache_clear()


def _built_with[T](name: str, value: str, build: Callable[[], T]) -> Callable[[], T]:
    """`build`, run once, on first use, with the variable `name` set to `value`."""

    @cache
    def built() -> T:
        with _environment(name, value):
            return build()

    return built


_PLATFORM_ENGINES = (_engine.get_engine, _engine.get_async_engine)
"""The platform's own accessors, which a contender with no mode of its own puts back."""


class ProjectFunctions(_LambdaHandlers):
    """The project's handlers, configured through the environment as when deployed.

    `keep_connection` (None: as the environment says) stands for `DB_KEEP_CONNECTION`. Each
    such contender is an instance of its own: engines built with the variable set its way and
    put in the platform's place (`_engine.get_engine`, ...) before each of its requests, so a
    kept connection stays kept while the other mode's requests run in between.
    """

    name = "project"

    def __init__(
        self,
        read_id: int,
        database_url: str,
        tokens: Tokens,
        *,
        keep_connection: bool | None = None,
    ) -> None:
        super().__init__(read_id)
        os.environ["DATABASE_URL"] = database_url
        os.environ["SUPABASE_URL"] = tokens.supabase_url
        os.environ["DB_APPLICATION_NAME"] = APPLICATION_NAME
        self.service_token = tokens.service_role()
        self.user_token = tokens.token(user_id=BENCH_USER.user_id)
        os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "bench")
        reset_caches()
        self._engines: tuple[Callable[[], Any], Callable[[], Any]] | None = None
        if keep_connection is not None:
            setting = str(keep_connection).lower()
            self.name = f"project, {KEEP_CONNECTION_VARIABLE}={setting}"
            self._engines = (
                _built_with(KEEP_CONNECTION_VARIABLE, setting, _PLATFORM_ENGINES[0].__wrapped__),
                _built_with(KEEP_CONNECTION_VARIABLE, setting, _PLATFORM_ENGINES[1].__wrapped__),
            )

    def become_this_instance(self) -> None:
        """Put this contender's engines where the platform looks them up (its mode's only)."""
        engines = self._engines or _PLATFORM_ENGINES
        for module in (_engine, _sessions):
            # setattr: mypy would refuse a plain assignment over a function's name.
            setattr(module, "get_engine", engines[0])  # noqa: B010
            setattr(module, "get_async_engine", engines[1])  # noqa: B010

    def prepare(self, route: str) -> Request:
        self.become_this_instance()
        return super().prepare(route)

    def handler_for(self, route: str) -> Handler:
        if route == "health":
            return health_handler
        if route == "connections":
            return connections_handler
        return items_handler


class ProjectFunctionsWithoutMetrics(ProjectFunctions):
    """The project's handlers with POWERTOOLS_METRICS_DISABLED: beside `ProjectFunctions`,
    what recording and writing the metrics costs a warm request."""

    name = "project, metrics off"

    def prepare(self, route: str) -> Request:
        request = super().prepare(route)

        def without_metrics() -> None:
            os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
            try:
                request()
            finally:
                del os.environ["POWERTOOLS_METRICS_DISABLED"]

        return without_metrics


class NaiveFastAPI(_LambdaHandlers):
    """The tutorial-style FastAPI + Mangum function."""

    name = "naive FastAPI"

    def __init__(self, read_id: int, database_url: str) -> None:
        super().__init__(read_id)
        self.handler = build_naive_handler(database_url, owner_id=str(BENCH_USER.user_id))

    def handler_for(self, route: str) -> Handler:
        return self.handler


ITEM_COLUMNS = "id, sku, name, quantity, created_at, updated_at"
RAW_SQL = {
    "health": "SELECT 1",
    "connections": USAGE_QUERY.text,
    "items list": f"SELECT {ITEM_COLUMNS} FROM items WHERE id > %s ORDER BY id LIMIT %s",
    "items get": f"SELECT {ITEM_COLUMNS} FROM items WHERE id = %s",
    "items create": (
        "INSERT INTO items (owner_id, sku, name, quantity) VALUES (%s, %s, %s, %s)"
        f" RETURNING {ITEM_COLUMNS}"
    ),
    "items update": (
        f"UPDATE items SET quantity = %s, updated_at = now() WHERE id = %s RETURNING {ITEM_COLUMNS}"
    ),
    "items delete": "DELETE FROM items WHERE id = %s RETURNING id",
}


RAW_CONNECT_ARGS: dict[str, Any] = {
    "prepare_threshold": None,
    "connect_timeout": 3,
    "application_name": APPLICATION_NAME,
    "client_encoding": "utf8",
}
"""The project's connect settings, for psycopg alone; TLS as the URL says, like the engine's
(the stack's URLs say `verify-full`), so every contender pays the same handshake."""


class RawPsycopg(Contender):
    """psycopg alone, one fresh connection per request, with the project's connect settings."""

    name = "raw psycopg"

    def __init__(self, read_id: int, database_url: str) -> None:
        super().__init__(read_id)
        self.database_url = database_url

    def _connect(self, *, autocommit: bool) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(self.database_url, autocommit=autocommit, **RAW_CONNECT_ARGS)

    def _params(self, route: str) -> list[Any]:
        match route:
            case "items list":
                return [0, 21]
            case "items get":
                return [self.read_id]
            case "items create":
                return [BENCH_USER.user_id, _new_sku(), "Bench item", 0]
            case "items update":
                return [7, self._write_id()]
            case "items delete":
                return [self._write_id()]
        return []

    def prepare(self, route: str) -> Request:
        query = RAW_SQL[route]
        params = self._params(route)
        write = route in WRITE_ROUTES

        def request() -> None:
            with self._connect(autocommit=not write) as conn:
                rows = conn.execute(query, params).fetchall()
                if not rows:
                    raise BenchError(f"{self.name} {route}: no row")
                if write:
                    conn.commit()
            if route == "items create":
                self.item_id = int(rows[0][0])

        return request
