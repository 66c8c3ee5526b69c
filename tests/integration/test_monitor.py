"""The scheduled monitor against the real stack: the connections a test holds open show in its
metrics, and so does crossing the connection budget, in the metric the alarm watches.

Connections are held directly on Postgres (a transaction-mode pooler's idle clients hold no
server connection) and through PgBouncer (they are its clients). The monitor runs through its
real handler with EventBridge's scheduled event, and every EMF line it writes is checked
against the format's schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from infra.local_stack import LocalStack
from shared._metrics import CATALOG, reset_cold_start
from tests.fixtures.emf import Metric, metrics_in
from tests.fixtures.lambda_events import FunctionOutput, LambdaTestContext, stored_event
from tests.fixtures.service import FUNCTIONS, handler_of
from tests.fixtures.stack import TEST_MAX_CONNECTIONS, free_port, reset_caches

PREFIX = "serverless-python-postgres-pytest-"
HELD = "held-by-test"
STATES = ("active", "idle", "idle_in_transaction", "other")


@dataclass
class Run:
    """One scheduled run: what the handler returned, its metrics, and everything it printed."""

    result: dict[str, Any]
    metrics: list[Metric]
    output: str

    def value(self, name: str, **dimensions: str) -> float:
        """The one value of the metric with these dimensions (`function` is the monitor's)."""
        if "function" in CATALOG[name].dimensions:
            dimensions["function"] = "monitor"
        [metric] = [m for m in self.metrics if m.name == name and _dims(m) == dimensions]
        assert metric.unit == CATALOG[name].unit
        [value] = metric.values
        return value

    @property
    def names(self) -> set[str]:
        return {metric.name for metric in self.metrics}

    def by_state(self) -> dict[str, float]:
        return {state: self.value("DatabaseConnections", state=state) for state in STATES}


def _dims(metric: Metric) -> dict[str, str]:
    return {k: v for k, v in metric.dimensions.items() if k != "service"}


class Monitor:
    """Runs the monitor's handler as its schedule does, under its deployed function name."""

    def __init__(self, output: FunctionOutput) -> None:
        self.output = output
        self.handler = handler_of(FUNCTIONS["monitor"])

    def __call__(self, event: Any = None) -> Run:
        context = LambdaTestContext()
        context._function_name = PREFIX + "monitor"
        self.output.read()
        result = self.handler(stored_event("scheduled") if event is None else event, context)
        output = self.output.read()
        return Run(result, metrics_in(output), output)


@pytest.fixture
def monitor(function_output: FunctionOutput, monkeypatch: pytest.MonkeyPatch) -> Iterator[Monitor]:
    monkeypatch.setenv("FUNCTION_NAME_PREFIX", PREFIX)
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    reset_caches()
    reset_cold_start()
    yield Monitor(function_output)
    monkeypatch.undo()
    reset_caches()


def hold(stack: ExitStack, url: str, count: int, *, in_transaction: bool = False) -> None:
    """Open `count` connections that stay open until `stack` closes: idle, or idle inside a
    transaction."""
    for _ in range(count):
        conn = stack.enter_context(
            psycopg.connect(url, application_name=HELD, autocommit=not in_transaction)
        )
        conn.execute("SELECT 1")


def test_a_run_publishes_usage_by_state_the_total_the_limit_and_the_budget(
    monitor: Monitor,
) -> None:
    run = monitor()

    assert run.result == {"ran": True}
    assert {(m.name, tuple(sorted(_dims(m)))) for m in run.metrics} == {
        ("ColdStart", ("function",)),
        ("Latency", ("function", "route")),
        ("DatabaseConnects", ("connection", "function")),
        ("DatabaseConnectTime", ("function",)),
        *(("DatabaseConnections", ("state",)) for _ in STATES),
        ("DatabaseConnectionsTotal", ()),
        ("DatabaseMaxConnections", ()),
        ("ConnectionBudgetUsed", ()),
    }
    assert {m.dimensions.get("state") for m in run.metrics} >= set(STATES)
    assert run.value("DatabaseMaxConnections") == TEST_MAX_CONNECTIONS
    total = run.value("DatabaseConnectionsTotal")
    assert sum(run.by_state().values()) == total
    assert run.by_state()["active"] >= 1  # the monitor's own query
    assert run.value("ConnectionBudgetUsed") == round(100 * total / (TEST_MAX_CONNECTIONS * 0.4), 1)
    assert "PoolerClients" not in run.names  # no admin console configured


def test_connections_held_open_show_by_state_and_in_the_total(
    monitor: Monitor, database: LocalStack
) -> None:
    monitor()  # the pooler's server connection for the monitor is open from here on
    before = monitor()
    with ExitStack() as held:
        hold(held, database.direct_url(), 3)
        hold(held, database.direct_url(), 2, in_transaction=True)
        during = monitor()

    assert during.value("DatabaseConnectionsTotal") - before.value("DatabaseConnectionsTotal") == 5
    assert during.by_state()["idle"] - before.by_state()["idle"] == 3
    assert during.by_state()["idle_in_transaction"] - before.by_state()["idle_in_transaction"] == 2
    assert f'"application_name":"{HELD}","state":"idle","connections":3' in during.output


@pytest.mark.parametrize(("uses_data_api", "over_budget"), [("true", True), ("false", False)])
def test_crossing_the_budget_shows_in_connection_budget_used(
    monitor: Monitor,
    database: LocalStack,
    monkeypatch: pytest.MonkeyPatch,
    uses_data_api: str,
    over_budget: bool,
) -> None:
    monkeypatch.setenv("DB_USES_DATA_API", uses_data_api)
    reset_caches()
    monitor()
    before = monitor()
    budget_with_data_api = TEST_MAX_CONNECTIONS * 40 // 100
    beyond = budget_with_data_api + 1 - int(before.value("DatabaseConnectionsTotal"))
    with ExitStack() as held:
        hold(held, database.direct_url(), beyond)
        during = monitor()

    assert before.value("ConnectionBudgetUsed") <= 100
    assert (during.value("ConnectionBudgetUsed") > 100) is over_budget


def test_pooler_clients_are_read_from_the_admin_console_when_configured(
    monitor: Monitor, database: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POOLER_ADMIN_URL", database.admin_url())
    reset_caches()
    monitor()
    before = monitor()
    with ExitStack() as held:
        hold(held, database.pooler_url(), 4)
        during = monitor()

    assert during.value("PoolerClients") - before.value("PoolerClients") == 4


def test_an_unreadable_admin_console_leaves_out_only_pooler_clients(
    monitor: Monitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "POOLER_ADMIN_URL", f"postgresql://admin:pw@127.0.0.1:{free_port()}/pgbouncer"
    )
    reset_caches()

    run = monitor()

    assert run.result == {"ran": True}
    assert "PoolerClients" not in run.names
    assert "DatabaseConnectionsTotal" in run.names
    assert '"message":"pooler clients not read"' in run.output
    assert "pw@" not in run.output


@pytest.mark.parametrize("event", [{}, stored_event("sqs"), None], ids=["empty", "sqs", "null"])
def test_only_a_scheduled_event_runs_the_job(monitor: Monitor, event: Any) -> None:
    run = monitor({"not": "scheduled"} if event is None else event)

    assert run.result == {"ran": False}
    assert run.names == {"ColdStart", "Latency"}
    assert '"message":"not a scheduled event: nothing done"' in run.output


def test_a_database_that_is_down_is_logged_and_counted_never_raised(
    monitor: Monitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    reset_caches()

    run = monitor()

    assert run.result == {"ran": False}
    assert run.names == {"ColdStart", "Latency", "ServiceUnavailable"}
    assert _dims(next(m for m in run.metrics if m.name == "ServiceUnavailable")) == {
        "function": "monitor",
        "cause": "pooler_unreachable",
    }
    assert "Traceback" not in run.output
