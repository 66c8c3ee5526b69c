"""Every function's metrics, from its real handler against the real stack: what on-call reads.

Each invocation's output is read back as CloudWatch would: every EMF line is checked against
the format's JSON schema (tests/fixtures/emf.py), then its metrics are compared, by name,
unit, value and dimensions, with what that request must have counted: success cold and warm,
each 4xx the platform answers, and each 503 cause produced by a real fault.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from sqlalchemy import Connection, text

from shared._metrics import CATALOG, reset_cold_start
from shared._secrets import secrets_manager_client
from shared.plain import plain_handler
from tests.fixtures.emf import Metric, metrics_in
from tests.fixtures.lambda_events import (
    FunctionOutput,
    LambdaTestContext,
    http_event,
    stored_event,
)
from tests.fixtures.service import HTTP_FUNCTIONS, handler_of
from tests.fixtures.stack import free_port, reset_caches
from tests.fixtures.tokens import FORGERIES, Tokens

pytestmark = pytest.mark.usefixtures("as_user")  # items are a user's own rows

PREFIX = "serverless-python-postgres-pytest-"
NAMESPACE = "serverless-python-postgres-pytest"
SERVICE = "pytest"
PLACEHOLDER = "Q3vWm0ZpX8aT4nR7kY1cL6hB9dS2fJ5e"  # the stack's secret before `make secret`

# A request each function answers 200, and the token it needs: none, the user's, the service's.
SUCCESS = {
    "health": ("GET /health", None),
    "items": ("GET /items", "user"),
    "connections": ("GET /connections", "service_role"),
}

REASON_OF_FORGERY = {
    "signed by another key": "bad_signature",
    "alg none": "algorithm_refused",
    "HS256 with the public key as secret": "algorithm_refused",
    "HS256 with a made-up secret": "algorithm_refused",
    "expired": "expired",
    "not yet valid": "not_yet_valid",
    "wrong audience": "wrong_audience",
    "no audience": "wrong_audience",
    "wrong issuer": "wrong_issuer",
    "unknown kid": "unknown_key",
    "no kid": "no_key_id",
    "payload changed after signing": "bad_signature",
    "malformed": "malformed",
}

type Key = tuple[str, tuple[tuple[str, str], ...]]


def key(name: str, **dimensions: str) -> Key:
    """A metric as CloudWatch identifies it: name and dimensions, `service` included."""
    return name, tuple(sorted({**dimensions, "service": SERVICE}.items()))


@dataclass
class Invocation:
    status: int
    metrics: list[Metric]

    @property
    def keys(self) -> set[Key]:
        return {metric.key for metric in self.metrics}

    def values(self, name: str, **dimensions: str) -> tuple[float, ...]:
        [metric] = [m for m in self.metrics if m.key == key(name, **dimensions)]
        assert metric.unit == CATALOG[name].unit
        assert metric.namespace == NAMESPACE
        return metric.values


class Invoker:
    """Invokes handlers as Lambda does, under the deployed function name, and reads back the
    metrics of each invocation."""

    def __init__(self, output: FunctionOutput, tokens: Tokens) -> None:
        self.output = output
        self.tokens = tokens

    def token(self, kind: str | None) -> str | None:
        """The bearer token: the service role's, the user's in scope (None), or none ("")."""
        if kind == "service_role":
            return self.tokens.service_role()
        return None if kind == "user" else ""

    def __call__(
        self, function: str, event: Any, handler: Any = None, timeout_ms: int = 10_000
    ) -> Invocation:
        context = LambdaTestContext(timeout_ms)
        context._function_name = PREFIX + function
        self.output.read()
        response = (handler or handler_of(HTTP_FUNCTIONS[function]))(event, context)
        return Invocation(response["statusCode"], metrics_in(self.output.read()))

    def success(self, function: str) -> Invocation:
        route, token = SUCCESS[function]
        return self(function, http_event(route, token=self.token(token)))


@pytest.fixture
def invoke(
    function_output: FunctionOutput, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Invoker]:
    """A new instance's settings, with the metrics' variables as serverless.yml sets them."""
    monkeypatch.setenv("FUNCTION_NAME_PREFIX", PREFIX)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE)
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    reset_caches()
    reset_cold_start()
    yield Invoker(function_output, tokens)
    monkeypatch.undo()
    reset_caches()


def test_every_http_function_has_a_successful_request_here() -> None:
    assert set(SUCCESS) == set(HTTP_FUNCTIONS)


@pytest.mark.parametrize("function", SUCCESS)
def test_a_request_counts_itself_its_latency_and_its_connection_cold_then_warm(
    invoke: Invoker, function: str
) -> None:
    route = SUCCESS[function][0]
    cold, warm = invoke.success(function), invoke.success(function)

    per_request = {
        key("Requests", function=function, route=route, status_class="2xx"),
        key("Requests", function=function, status_class="2xx"),  # the total
        key("Latency", function=function, route=route),
        key("DatabaseConnects", function=function, connection="new"),
        key("DatabaseConnectTime", function=function),
    }
    assert (cold.status, warm.status) == (200, 200)
    assert cold.keys == per_request | {key("ColdStart", function=function)}
    assert warm.keys == per_request
    for invocation in (cold, warm):
        assert invocation.values(
            "Requests", function=function, route=route, status_class="2xx"
        ) == (1.0,)
        assert invocation.values("DatabaseConnects", function=function, connection="new") == (1.0,)
        [latency] = invocation.values("Latency", function=function, route=route)
        [connect_ms] = invocation.values("DatabaseConnectTime", function=function)
        assert 0 < connect_ms < latency
    assert cold.values("ColdStart", function=function) == (1.0,)


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_refused_token_is_counted_by_its_reason(invoke: Invoker, forgery: str) -> None:
    event = http_event("GET /items", token=invoke.tokens.forged(forgery))

    refused = invoke("items", event)

    assert refused.status == 401
    assert refused.keys == {
        key("ColdStart", function="items"),
        key("Requests", function="items", route="GET /items", status_class="4xx"),
        key("Requests", function="items", status_class="4xx"),  # the total
        key("Latency", function="items", route="GET /items"),
        key("TokenRefused", function="items", reason=REASON_OF_FORGERY[forgery]),
    }
    assert refused.values("TokenRefused", function="items", reason=REASON_OF_FORGERY[forgery]) == (
        1.0,
    )


def test_a_request_without_a_token_is_counted_as_missing(invoke: Invoker) -> None:
    refused = invoke("connections", http_event("GET /connections", token=""))

    assert refused.status == 401
    assert key("TokenRefused", function="connections", reason="missing") in refused.keys


def test_a_forbidden_request_is_a_4xx_and_no_token_refusal(invoke: Invoker) -> None:
    forbidden = invoke("connections", http_event("GET /connections"))  # the user's token

    assert forbidden.status == 403
    assert forbidden.keys == {
        key("ColdStart", function="connections"),
        key("Requests", function="connections", route="GET /connections", status_class="4xx"),
        key("Requests", function="connections", status_class="4xx"),  # the total
        key("Latency", function="connections", route="GET /connections"),
    }


def test_a_missing_row_is_counted_under_its_route_template_not_its_path(invoke: Invoker) -> None:
    route = "GET /items/{item_id}"

    missing = invoke("items", http_event(route, params={"item_id": 987654321}))

    assert missing.status == 404
    assert key("Requests", function="items", route=route, status_class="4xx") in missing.keys
    assert key("Requests", function="items", status_class="4xx") in missing.keys
    assert key("DatabaseConnects", function="items", connection="new") in missing.keys


@pytest.mark.parametrize(
    "event",
    [stored_event("sqs"), {"routeKey": "GET /items/987654321"}, None],
    ids=["sqs", "a raw path as route key", "null"],
)
def test_an_event_that_is_not_http_is_counted_under_other(invoke: Invoker, event: Any) -> None:
    refused = invoke("health", event)

    assert refused.status == 400
    assert refused.keys == {
        key("ColdStart", function="health"),
        key("Requests", function="health", route="$other", status_class="4xx"),
        key("Requests", function="health", status_class="4xx"),  # the total
        key("Latency", function="health", route="$other"),
    }


def unavailable(function: str, route: str, cause: str) -> set[Key]:
    return {
        key("ColdStart", function=function),
        key("Requests", function=function, route=route, status_class="5xx"),
        key("Requests", function=function, status_class="5xx"),  # the total
        key("Latency", function=function, route=route),
        key("ServiceUnavailable", function=function, cause=cause),
        key("ServiceUnavailable", cause=cause),  # the total per cause
    }


@pytest.mark.parametrize("function", SUCCESS)
def test_an_unreachable_pooler_is_counted_as_such(
    invoke: Invoker, monkeypatch: pytest.MonkeyPatch, function: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    reset_caches()

    down = invoke.success(function)

    assert down.status == 503
    assert down.keys == unavailable(function, SUCCESS[function][0], "pooler_unreachable")


@pytest.mark.parametrize("function", SUCCESS)
def test_no_time_left_to_connect_is_counted_as_the_deadline(invoke: Invoker, function: str) -> None:
    route, token = SUCCESS[function]

    late = invoke(function, http_event(route, token=invoke.token(token)), timeout_ms=2_000)

    assert late.status == 503
    assert late.keys == unavailable(function, route, "deadline")


@plain_handler
def sleeps(conn: Connection) -> dict[str, Any]:
    """A plain function whose query outlasts the statement timeout, and the deadline."""
    conn.execute(text("SELECT pg_sleep(5)"))
    return {}


@plain_handler
def collides(conn: Connection) -> dict[str, Any]:
    """A plain function whose transaction Postgres fails as a serialization failure (40001)."""
    conn.execute(
        text("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'serialization_failure'; END $$")
    )
    return {}


def test_a_statement_timeout_is_counted_as_such(
    invoke: Invoker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_STATEMENT_TIMEOUT_MS", "200")
    reset_caches()

    slow = invoke("probe", http_event("GET /probe"), handler=sleeps)

    assert slow.status == 503
    assert slow.keys == unavailable("probe", "GET /probe", "statement_timeout") | {
        key("DatabaseConnects", function="probe", connection="new"),
        key("DatabaseConnectTime", function="probe"),
    }


def test_a_query_cut_by_the_deadline_is_counted_as_the_deadline(invoke: Invoker) -> None:
    cut = invoke("probe", http_event("GET /probe"), handler=sleeps, timeout_ms=2_600)

    assert cut.status == 503
    assert key("ServiceUnavailable", function="probe", cause="deadline") in cut.keys


def test_a_serialization_failure_is_counted_as_such(invoke: Invoker) -> None:
    collided = invoke("probe", http_event("GET /probe"), handler=collides)

    assert collided.status == 503
    assert key("ServiceUnavailable", function="probe", cause="serialization") in collided.keys


def test_an_unset_database_secret_is_counted_as_secret_unavailable(
    invoke: Invoker, aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = boto3.client("secretsmanager").create_secret(
        Name="app/test/database-url", SecretString=PLACEHOLDER
    )["ARN"]
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.setenv("DATABASE_SECRET_ARN", arn)
    secrets_manager_client.cache_clear()
    reset_caches()

    unset = invoke.success("health")

    secrets_manager_client.cache_clear()
    assert unset.status == 503
    assert unset.keys == unavailable("health", "GET /health", "secret_unavailable")


def test_unreachable_signing_keys_are_counted_as_such(
    invoke: Invoker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPABASE_URL", f"http://127.0.0.1:{free_port()}")
    reset_caches()

    keyless = invoke.success("items")

    assert keyless.status == 503
    assert keyless.keys == unavailable("items", "GET /items", "signing_keys_unavailable")
