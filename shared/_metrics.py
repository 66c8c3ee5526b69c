"""Metrics from every invocation, as CloudWatch embedded metric format (EMF) log lines.

EMF is a JSON log line that CloudWatch Logs turns into metrics: no SDK call, no network, no
latency added to a request (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html).
Powertools serialises the lines; this module decides what may be written:

- only the metrics of `CATALOG`, each with exactly its dimensions (plus `service`, from
  POWERTOOLS_SERVICE_NAME), and dimension values from closed sets. A
  dimension that names a user, a token, an id or a raw path would make one CloudWatch metric
  per value, each billed, and put personal data in the metric store: `record` refuses it with
  `MetricRefusedError`, whoever asks;
- values are collected per invocation (`invocation_metrics`) and written once, when it ends,
  however it ends: one line per set of dimension values, since an EMF directive's dimensions
  apply to every metric in it. A CloudWatch alarm must name a metric's exact dimension set and
  cannot add up the per-route series, so a metric with `aggregates` is published under those
  coarser sets too, from the same line;
- writing them never fails a request: a failure is logged and the metrics dropped.

The alarms and the dashboard in the stack are checked against `CATALOG`
(tests/package/test_monitoring_template.py); change them together.
POWERTOOLS_METRICS_DISABLED=true records and writes nothing (`make bench` measures the cost
with and without).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)

from shared._settings import get_settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricSpec:
    """A metric's unit, its dimensions (besides `service`) and the coarser sets it is also under."""

    unit: str
    dimensions: tuple[str, ...]
    aggregates: tuple[tuple[str, ...], ...] = ()

    @property
    def dimension_sets(self) -> tuple[tuple[str, ...], ...]:
        """Every dimension set the metric is published under, `service` left out."""
        return (self.dimensions, *self.aggregates)


CATALOG: dict[str, MetricSpec] = {
    "Requests": MetricSpec(
        "Count", ("function", "route", "status_class"), aggregates=(("function", "status_class"),)
    ),
    "Latency": MetricSpec("Milliseconds", ("function", "route")),
    "ColdStart": MetricSpec("Count", ("function",)),
    "DatabaseConnects": MetricSpec("Count", ("function", "connection")),
    "DatabaseConnectTime": MetricSpec("Milliseconds", ("function",)),
    "ServiceUnavailable": MetricSpec("Count", ("function", "cause"), aggregates=(("cause",),)),
    "TokenRefused": MetricSpec("Count", ("function", "reason")),
    "DatabaseConnections": MetricSpec("Count", ("state",)),
    "DatabaseConnectionsTotal": MetricSpec("Count", ()),
    "DatabaseMaxConnections": MetricSpec("Count", ()),
    "ConnectionBudgetUsed": MetricSpec("Percent", ()),
    "PoolerClients": MetricSpec("Count", ()),
}
"""Every metric the functions write, the one list the stack's alarms are checked against."""

STATUS_CLASSES = frozenset({"2xx", "3xx", "4xx", "5xx"})
CONNECTIONS = frozenset({"new", "reused"})
CAUSES = frozenset(
    {
        "pooler_unreachable",
        "deadline",
        "statement_timeout",
        "serialization",
        "secret_unavailable",
        "signing_keys_unavailable",
        "commit_outcome_unknown",
    }
)
"""Why a request answered 503; set by the error mapping (`shared._error_mapping`)."""

REASONS = frozenset(
    {
        "malformed",
        "algorithm_refused",
        "unknown_key",
        "no_key_id",
        "expired",
        "not_yet_valid",
        "bad_signature",
        "wrong_issuer",
        "wrong_audience",
        "role_refused",
        "no_user",
        "missing",
    }
)
"""Why an access token was refused (401); set by the token checks (`shared._tokens`)."""

STATES = frozenset({"active", "idle", "idle_in_transaction", "other"})
OTHER_ROUTE = "$other"
"""The route of an event that names none (or names one that is not a route template)."""

# Lambda's own rule for function names: a deployment has a handful, never one per request.
_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ROUTE_KEY = re.compile(r"(?:GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS|ANY) (/[A-Za-z0-9_.{}+-]*)+")
# A path segment that is a value, not a template: digits, or a UUID.
_VALUE_SEGMENT = re.compile(r"\d+|[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}")


def _is_route(value: str) -> bool:
    """API Gateway's route key (`GET /items/{item_id}`), `$default`, or `$other`; never a
    raw path, whose ids would make a metric per resource."""
    if value in ("$default", OTHER_ROUTE):
        return True
    if len(value) > 256 or not _ROUTE_KEY.fullmatch(value):
        return False
    segments = value.partition(" ")[2].split("/")
    return not any(_VALUE_SEGMENT.fullmatch(segment) for segment in segments)


DIMENSION_VALUES: dict[str, Callable[[str], bool]] = {
    "function": lambda value: _FUNCTION_NAME.fullmatch(value) is not None,
    "route": _is_route,
    "status_class": STATUS_CLASSES.__contains__,
    "connection": CONNECTIONS.__contains__,
    "cause": CAUSES.__contains__,
    "reason": REASONS.__contains__,
    "state": STATES.__contains__,
}
"""What each dimension's value may be: a closed set, or a shape that admits only a few."""


class MetricRefusedError(ValueError):
    """A metric, dimension or dimension value the catalog does not allow: a bug to fix."""


@dataclass(slots=True)
class _Invocation:
    function: str
    values: list[tuple[str, float, tuple[tuple[str, str], ...]]] = field(default_factory=list)


_current: ContextVar[_Invocation | None] = ContextVar("invocation_metrics", default=None)
_cold_start = True


def check(name: str, dimensions: Mapping[str, str]) -> MetricSpec:
    """The metric's spec, if `dimensions` are exactly its own with allowed values; else
    MetricRefusedError naming what is wrong (never the value, which may be personal)."""
    spec = CATALOG.get(name)
    if spec is None:
        raise MetricRefusedError(f"{name!r} is not a metric of the catalog")
    if set(dimensions) != set(spec.dimensions):
        raise MetricRefusedError(
            f"{name} takes the dimensions {sorted(spec.dimensions)}, not {sorted(dimensions)}"
        )
    for dimension, value in dimensions.items():
        if not (isinstance(value, str) and DIMENSION_VALUES[dimension](value)):
            raise MetricRefusedError(f"{name}: a value of {dimension} outside its closed set")
    return spec


def record(name: str, value: float, **dimensions: str) -> None:
    """Add one value of a catalogued metric to the current invocation's metrics.

    The invocation supplies `function` when the metric has that dimension and the caller left
    it out. Checked even outside an invocation, where nothing is written (scripts, tests).
    """
    invocation = _current.get()
    spec = CATALOG.get(name)
    if spec is not None and "function" in spec.dimensions:
        dimensions.setdefault("function", invocation.function if invocation else "local")
    check(name, dimensions)
    if invocation is not None:
        invocation.values.append((name, value, tuple(sorted(dimensions.items()))))


def function_name(context: object = None) -> str:
    """The `function` dimension: METRICS_FUNCTION_NAME, else the Lambda function's name
    without FUNCTION_NAME_PREFIX (`${service}-${stage}-`): `items`, `health`, ..."""
    name = getattr(context, "function_name", None) or os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
    name = name if isinstance(name, str) and name else "local"
    try:
        settings = get_settings()
    except ValueError:  # a setting is malformed: the handler answers that (a 500 naming it)
        return name
    return (
        settings.metrics_function_name or name.removeprefix(settings.function_name_prefix) or name
    )


def route_of(event: object) -> str:
    """The `route` dimension of an event: API Gateway's route key, else `$other`."""
    if not isinstance(event, dict):
        return OTHER_ROUTE
    context = event.get("requestContext")
    route = event.get("routeKey")
    if route is None and isinstance(context, dict):
        route = context.get("routeKey")  # HTTP API payload 1.0
    return route if isinstance(route, str) and _is_route(route) else OTHER_ROUTE


def status_class(status_code: int) -> str:
    """`2xx` ... `5xx`; anything else counts as a server error."""
    label = f"{status_code // 100}xx"
    return label if label in STATUS_CLASSES else "5xx"


def reset_cold_start() -> None:
    """Count the next invocation as this instance's first (tests, as a new instance)."""
    global _cold_start
    _cold_start = True


@contextmanager
def invocation_metrics(function: str) -> Iterator[None]:
    """Collect the block's metrics, ColdStart for an instance's first invocation, and write
    them when the block ends, however it ends; with POWERTOOLS_METRICS_DISABLED, nothing."""
    global _cold_start
    if is_metrics_disabled():
        yield
        return
    invocation = _Invocation(function)
    token = _current.set(invocation)
    try:
        if _cold_start:
            _cold_start = False
            record("ColdStart", 1)
        yield
    finally:
        _current.reset(token)
        _write(invocation)


type _Line = tuple[tuple[tuple[str, str], ...], tuple[tuple[str, ...], ...]]
"""What one EMF line shares: its dimensions' values, and the coarser sets they are also under."""


def _write(invocation: _Invocation) -> None:
    """One EMF line per set of dimension values (and aggregates); a failure is logged, never
    raised."""
    if not invocation.values:
        return
    lines: dict[_Line, list[tuple[str, float]]] = {}
    for name, value, dimensions in invocation.values:
        lines.setdefault((dimensions, CATALOG[name].aggregates), []).append((name, value))
    namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "serverless-python-postgres"
    service = os.environ.get("POWERTOOLS_SERVICE_NAME") or "service_undefined"
    try:
        for (dimensions, aggregates), values in lines.items():
            # `service` as a default dimension is in every set, the aggregates' too.
            line = AmazonCloudWatchEMFProvider(
                namespace=namespace, default_dimensions={"service": service}
            )
            for dimension, label in dimensions:
                line.add_dimension(dimension, label)
            labels = dict(dimensions)
            for aggregate in aggregates:
                line.add_dimensions(**{dimension: labels[dimension] for dimension in aggregate})
            for name, value in values:
                line.add_metric(name, CATALOG[name].unit, value)
            line.flush_metrics()
    except Exception as exc:  # metrics are never worth a failed request
        logger.warning("metrics not written", extra={"error": type(exc).__name__})


# SQLAlchemy pool events: where a connection is opened and where it is handed out, so both
# the per-request connections of NullPool and a kept connection are counted alike.
_CONNECT_MS = "metrics_connect_ms"


def timed_connect(connect: Callable[..., Any]) -> Callable[..., Any]:
    """A `do_connect` listener that times `connect` and notes the time on the pool entry."""

    def timed(dialect: Any, record_: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        started = time.perf_counter()
        connection = connect(dialect, record_, cargs, cparams)
        record_.info[_CONNECT_MS] = (time.perf_counter() - started) * 1000
        return connection

    return timed


def count_checkout(_dbapi_connection: Any, record_: Any, _proxy: Any) -> None:
    """A `checkout` listener: DatabaseConnects, new or reused; DatabaseConnectTime if new."""
    connect_ms = record_.info.pop(_CONNECT_MS, None)
    record("DatabaseConnects", 1, connection="reused" if connect_ms is None else "new")
    if connect_ms is not None:
        record("DatabaseConnectTime", connect_ms)
