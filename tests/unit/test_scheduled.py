"""The scheduled boundary without a database: which events run the job, and a job that fails
is logged and counted, never raised. The monitor against the real stack is
tests/integration/test_monitor.py."""

from __future__ import annotations

from typing import Any

import pytest

from shared._metrics import reset_cold_start
from shared._scheduled import is_scheduled_event, scheduled_handler
from tests.fixtures.emf import metrics_in
from tests.fixtures.lambda_events import (
    FunctionOutput,
    LambdaTestContext,
    http_event,
    stored_event,
)

ran: list[str] = []


@scheduled_handler
def counts_its_runs() -> None:
    """A job that only notes that it ran."""
    ran.append("ran")


@scheduled_handler
def has_a_bug() -> None:
    """A job that fails as a bug does."""
    raise KeyError("the job's own mistake")


@pytest.mark.parametrize(
    ("event", "scheduled"),
    [
        (stored_event("scheduled"), True),
        (stored_event("scheduled") | {"source": "aws.s3"}, False),
        (stored_event("scheduled") | {"detail-type": "Object Created"}, False),
        (stored_event("sqs"), False),
        (http_event("GET /health"), False),
        ({}, False),
        (None, False),
    ],
    ids=["schedule", "another source", "another detail type", "sqs", "http", "empty", "null"],
)
def test_only_eventbridges_scheduled_event_is_one(event: Any, scheduled: bool) -> None:
    assert is_scheduled_event(event) is scheduled


def test_a_scheduled_event_runs_the_job_once() -> None:
    ran.clear()

    result = counts_its_runs(stored_event("scheduled"), LambdaTestContext())

    assert result == {"ran": True}
    assert ran == ["ran"]


def test_another_event_does_not_run_the_job() -> None:
    ran.clear()

    result = counts_its_runs(stored_event("sqs"), LambdaTestContext())

    assert result == {"ran": False}
    assert ran == []


def test_a_failing_job_is_logged_without_its_message_and_not_raised(
    function_output: FunctionOutput, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "pytest")
    reset_cold_start()

    result = has_a_bug(stored_event("scheduled"), LambdaTestContext())

    output = function_output.read()
    assert result == {"ran": False}
    assert '"message":"request failed"' in output
    assert '"error":"KeyError"' in output
    assert "the job's own mistake" not in output
    assert "Traceback" not in output
    assert {m.name for m in metrics_in(output)} == {"ColdStart", "Latency"}
