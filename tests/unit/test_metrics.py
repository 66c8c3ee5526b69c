"""The metric catalog and its helper: what CloudWatch accepts, totals that are coarser views of a
metric; only the catalog's metrics, dimensions and values, written as valid EMF once per
invocation, whatever happens; and every cause and reason the platform can give is one the
catalog accepts."""

from __future__ import annotations

import io
import sys
import uuid
from collections.abc import Iterator

import pytest

import shared._deadline  # registers DeadlineExceededError among the 503s
import shared._error_mapping
import shared._tokens
from functions.health.handler import handler as health_handler
from shared._driver import CommitOutcomeUnknownError
from shared._engine import forget_engines
from shared._error_mapping import error_response
from shared._errors import ServiceUnavailableError
from shared._metrics import (
    CATALOG,
    CAUSES,
    REASONS,
    MetricRefusedError,
    MetricSpec,
    invocation_metrics,
    record,
    reset_cold_start,
)
from shared._settings import get_settings
from tests.fixtures.emf import metrics_in
from tests.fixtures.lambda_events import FunctionOutput, LambdaTestContext, http_event

USER_ID = str(uuid.uuid4())
NAMESPACE = "metrics-test"
# The units CloudWatch's embedded metric format accepts that these metrics could use.
UNITS = frozenset({"Count", "Milliseconds", "Percent"})


@pytest.fixture(autouse=True)
def _namespace_and_service(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "pytest")
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    reset_cold_start()
    yield
    reset_cold_start()


def test_control_a_user_id_as_a_dimension_is_refused() -> None:
    with pytest.raises(MetricRefusedError, match="dimensions"):
        record(
            "Requests", 1, function="items", route="GET /items", status_class="2xx", user=USER_ID
        )


@pytest.mark.parametrize(
    ("name", "dimensions"),
    [
        (
            "Requests",
            {"function": "items", "route": f"GET /items/{USER_ID}", "status_class": "2xx"},
        ),
        ("Requests", {"function": "items", "route": "GET /items/42", "status_class": "2xx"}),
        ("Requests", {"function": "items", "route": "GET /items", "status_class": "200"}),
        ("Latency", {"function": USER_ID.replace("-", "") + "x" * 40, "route": "$other"}),
        ("ServiceUnavailable", {"function": "items", "cause": "database on fire"}),
        ("TokenRefused", {"function": "items", "reason": USER_ID}),
        ("DatabaseConnections", {"state": "idle in transaction"}),
        ("Requests", {"function": "items", "route": "GET /items"}),
        ("Signups", {}),
    ],
    ids=[
        "user id in the route",
        "item id in the route",
        "a status, not its class",
        "a function name Lambda would refuse",
        "an unknown cause",
        "a token's subject as reason",
        "a raw pg_stat_activity state",
        "a dimension missing",
        "a metric outside the catalog",
    ],
)
def test_values_outside_the_closed_sets_are_refused(name: str, dimensions: dict[str, str]) -> None:
    with pytest.raises(MetricRefusedError):
        record(name, 1, **dimensions)


def test_every_503_the_platform_raises_has_a_catalogued_cause() -> None:
    def subclasses(cls: type[ServiceUnavailableError]) -> Iterator[type[ServiceUnavailableError]]:
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    raised: set[type[ServiceUnavailableError]] = {
        ServiceUnavailableError,
        *subclasses(ServiceUnavailableError),
    }
    answers = [
        a
        for a in vars(shared._error_mapping).values()
        if isinstance(a, shared._error_mapping._Answer)
    ]
    mapped = [answer for answer in answers if answer.status_code == 503]

    assert len(raised) >= 5
    assert len(mapped) == 4
    assert {cls.cause for cls in raised} | {answer.cause for answer in mapped} <= CAUSES


def test_every_token_refusal_has_a_catalogued_reason() -> None:
    reasons = {reason for _, _, reason in shared._tokens._REASONS}
    reasons |= {reason for _, reason in shared._tokens._MISSING_CLAIM_REASONS.values()}

    assert reasons <= REASONS


def test_the_mapping_counts_a_lost_commit_by_its_cause(function_output: FunctionOutput) -> None:
    with invocation_metrics("items"):
        response = error_response(CommitOutcomeUnknownError("connection lost during COMMIT"))

    metrics = metrics_in(function_output.read())
    assert response.cause == "commit_outcome_unknown"
    # Per function, and the total per cause the alarms watch: one value, two dimension sets.
    assert [(m.dimensions, m.values) for m in metrics if m.name == "ServiceUnavailable"] == [
        ({"cause": "commit_outcome_unknown", "function": "items", "service": "pytest"}, (1.0,)),
        ({"cause": "commit_outcome_unknown", "service": "pytest"}, (1.0,)),
    ]


def failing_invocation() -> None:
    with invocation_metrics("health"):
        record("Latency", 1.5, route="GET /health")
        record("Latency", 2.5, route="GET /health")
        raise ZeroDivisionError


def test_metrics_are_written_once_when_the_block_fails(function_output: FunctionOutput) -> None:
    with pytest.raises(ZeroDivisionError):
        failing_invocation()

    metrics = metrics_in(function_output.read())
    assert {m.namespace for m in metrics} == {NAMESPACE}
    assert sorted((m.name, m.unit, m.values) for m in metrics) == [
        ("ColdStart", "Count", (1.0,)),
        ("Latency", "Milliseconds", (1.5, 2.5)),
    ]
    assert all(m.dimensions["function"] == "health" for m in metrics)


def test_each_metric_has_exactly_its_catalogued_dimensions_and_unit(
    function_output: FunctionOutput,
) -> None:
    with invocation_metrics("items"):
        record("Requests", 1, route="GET /items", status_class="2xx")
        record("Latency", 3, route="GET /items")
        record("DatabaseConnects", 1, connection="new")
        record("DatabaseConnectTime", 4)
        record("DatabaseConnections", 2, state="idle")
        record("ConnectionBudgetUsed", 12.5)

    published = set()
    for metric in metrics_in(function_output.read()):
        spec = CATALOG[metric.name]
        assert metric.unit == spec.unit
        dimensions = tuple(sorted(set(metric.dimensions) - {"service"}))
        assert dimensions in {tuple(sorted(d)) for d in spec.dimension_sets}, metric
        assert "service" in metric.dimensions
        published.add((metric.name, dimensions))

    assert ("Requests", ("function", "status_class")) in published  # the total the alarm reads


def test_a_failure_to_write_fails_no_request(
    monkeypatch: pytest.MonkeyPatch, function_output: FunctionOutput
) -> None:
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stdout", closed)

    with invocation_metrics("health"):
        record("Latency", 1, route="GET /health")

    monkeypatch.undo()
    assert '"message":"metrics not written"' in function_output.read()


def test_disabled_metrics_write_nothing(
    monkeypatch: pytest.MonkeyPatch, function_output: FunctionOutput
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")

    with invocation_metrics("health"):
        record("Latency", 1, route="GET /health")

    assert metrics_in(function_output.read()) == []


def test_a_malformed_setting_is_still_a_json_500_counted_under_the_lambda_name(
    monkeypatch: pytest.MonkeyPatch, function_output: FunctionOutput
) -> None:
    monkeypatch.setenv("DB_CONNECT_TIMEOUT", "soon")
    forget_engines()  # an engine built by an earlier test would never read the setting
    get_settings.cache_clear()

    response = health_handler(http_event("GET /health"), LambdaTestContext())

    monkeypatch.undo()
    get_settings.cache_clear()
    assert response["statusCode"] == 500
    requests = [m for m in metrics_in(function_output.read()) if m.name == "Requests"]
    assert [m.dimensions for m in requests] == [
        {
            "function": "serverless-python-postgres-test",
            "route": "GET /health",
            "status_class": "5xx",
            "service": "pytest",
        },
        {"function": "serverless-python-postgres-test", "status_class": "5xx", "service": "pytest"},
    ]


@pytest.mark.parametrize(("name", "spec"), sorted(CATALOG.items()))
def test_each_metric_has_a_cloudwatch_unit_and_at_most_nine_dimensions(
    name: str, spec: MetricSpec
) -> None:
    assert spec.unit in UNITS, name
    # EMF allows 30 dimensions per set; CloudWatch alarms and SEARCH stay readable well below.
    assert all(len(dimensions) + 1 <= 9 for dimensions in spec.dimension_sets), name


@pytest.mark.parametrize(("name", "spec"), sorted(CATALOG.items()))
def test_each_total_drops_dimensions_and_adds_none(name: str, spec: MetricSpec) -> None:
    for aggregate in spec.aggregates:
        assert set(aggregate) < set(spec.dimensions), name
