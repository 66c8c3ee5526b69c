"""The plain handlers, invoked as Lambda invokes them, against Postgres through the pooler."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from functions.connections.handler import handler as connections_handler
from functions.health.handler import handler as health_handler
from infra.local_stack import LocalStack
from tests.fixtures.lambda_events import LambdaTestContext, body_of, http_event
from tests.fixtures.stack import TEST_MAX_CONNECTIONS

PROBE_CONNECTIONS = 3


def test_health_answers_from_the_database() -> None:
    response = health_handler(http_event("GET /health"), LambdaTestContext())

    assert response["statusCode"] == 200
    assert response["headers"]["content-type"] == "application/json"
    assert body_of(response) == {"status": "ok", "database": "reachable"}


@pytest.fixture
def idle_probe_connections(stack: LocalStack) -> Iterator[str]:
    """Direct connections with a name of their own, sitting idle while the monitor looks."""
    name = "monitor-probe"
    connections = [
        psycopg.connect(stack.direct_url(), application_name=name, autocommit=True)
        for _ in range(PROBE_CONNECTIONS)
    ]
    try:
        yield name
    finally:
        for conn in connections:
            conn.close()


def test_monitor_reports_usage_by_application(idle_probe_connections: str) -> None:
    response = connections_handler(http_event("GET /connections"), LambdaTestContext())
    report: dict[str, Any] = body_of(response)

    assert response["statusCode"] == 200
    assert report["max_connections"] == TEST_MAX_CONNECTIONS
    usage = {
        (row["application_name"], row["state"]): row["connections"]
        for row in report["by_application"]
    }
    assert usage[(idle_probe_connections, "idle")] == PROBE_CONNECTIONS
    # The monitor's own query is running through the pooler while it is counted.
    assert usage[("pytest", "active")] >= 1
    assert report["in_use"] == sum(usage.values())
    assert report["in_use"] >= PROBE_CONNECTIONS + 1
    assert (
        report["guidance"]["with_data_api"]["limit_connections"] == TEST_MAX_CONNECTIONS * 40 // 100
    )
