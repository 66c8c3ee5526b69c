"""What the packaged template gives the metrics: each function's short name as the `function`
dimension the alarms filter on, the stage's namespace, and the monitor's schedule.

The functions name themselves from their Lambda function name less FUNCTION_NAME_PREFIX
(`shared._metrics.function_name`), so the prefix must be exactly what the framework puts
before each function's key; the monitor runs every minute, one instance at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared._metrics import function_name
from shared._settings import get_settings
from tests.fixtures.service import HTTP_FUNCTIONS, SERVICE
from tests.package.templates import STAGE, serverless_package


@pytest.fixture(scope="module")
def template(deployable: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The template `serverless package --stage ci` writes from the test build."""
    return serverless_package(tmp_path_factory.mktemp("serverless-package-metrics"), deployable)


def of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {n: r["Properties"] for n, r in template["Resources"].items() if r["Type"] == kind}


def test_each_function_counts_under_its_own_short_name(
    template: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    functions = of_type(template, "AWS::Lambda::Function").values()
    named = {}
    for function in functions:
        variables = function["Environment"]["Variables"]
        assert variables["POWERTOOLS_METRICS_NAMESPACE"] == f"{SERVICE.name}/{STAGE}"
        for variable in ("FUNCTION_NAME_PREFIX", "METRICS_FUNCTION_NAME"):
            monkeypatch.delenv(variable, raising=False)
            if variable in variables:
                monkeypatch.setenv(variable, variables[variable])
        monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", function["FunctionName"])
        get_settings.cache_clear()
        named[function_name()] = function["FunctionName"]
    monkeypatch.undo()
    get_settings.cache_clear()

    assert set(named) == {function.name for function in SERVICE.functions}


def test_the_monitor_runs_every_minute_one_instance_at_a_time(template: dict[str, Any]) -> None:
    [monitor] = [
        name
        for name, function in of_type(template, "AWS::Lambda::Function").items()
        if function["FunctionName"].endswith("-monitor")
    ]
    target = {"Fn::GetAtt": [monitor, "Arn"]}
    [rule] = [
        rule
        for rule in of_type(template, "AWS::Events::Rule").values()
        if target in [t["Arn"] for t in rule["Targets"]]
    ]

    assert rule["ScheduleExpression"] == "rate(1 minute)"
    assert rule["State"] == "ENABLED"
    assert [t["Arn"] for t in rule["Targets"]] == [target]
    assert of_type(template, "AWS::Lambda::Function")[monitor]["ReservedConcurrentExecutions"] == 1
    assert "monitor" not in HTTP_FUNCTIONS
