"""The on-call pieces of the packaged template: alarms, the topic they notify, the dashboard and
the tracing switch, each from serverless.yml's params.

An alarm watches one metric with its exact dimension set; one on a metric nobody publishes, or
on a dimension set nobody publishes it under, stays silent forever. So every alarm on a custom
metric is checked against `shared._metrics.CATALOG`, the functions' own list.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared._metrics import CATALOG
from tests.fixtures.service import SERVICE
from tests.package.templates import STAGE, cfn_lint, run_serverless_package, serverless_package

PAGER = "arn:aws:sns:eu-west-1:123456789012:pager"
PREFIX = f"{SERVICE.name}-{STAGE}"
# serverless.yml's defaults, and the values the tuned stage passes instead.
DEFAULTS = {
    "alarmFunctionErrors": 1,
    "alarmThrottles": 1,
    "alarmDurationPercentOfTimeout": 80,
    "alarmConcurrencyPercent": 80,
    "alarmServerErrorPercent": 5,
    "alarmServiceUnavailablePercent": 1,
    "alarmConnectionBudgetPercent": 80,
}
TUNED = {
    "alarmFunctionErrors": 3,
    "alarmThrottles": 2,
    "alarmDurationPercentOfTimeout": 50,
    "alarmConcurrencyPercent": 90,
    "alarmServerErrorPercent": 2,
    "alarmServiceUnavailablePercent": 0.5,
    "alarmConnectionBudgetPercent": 70,
}
TUNED_CONCURRENCY = 40  # the items function's reservedConcurrency on the tuned stage
XRAY_POLICY = {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AWSXRayDaemonWriteAccess"}


@pytest.fixture(scope="module")
def template(deployable: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The template with serverless.yml's defaults."""
    return serverless_package(tmp_path_factory.mktemp("monitoring-default"), deployable)


@pytest.fixture(scope="module")
def tuned(deployable: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The template of a stage with its own thresholds, an existing topic, tracing on and API
    Gateway's detailed metrics off."""
    return serverless_package(
        tmp_path_factory.mktemp("monitoring-tuned"),
        deployable,
        *(f"--param={name}={value}" for name, value in TUNED.items()),
        f"--param=alarmTopicArn={PAGER}",
        f"--param=itemsConcurrency={TUNED_CONCURRENCY}",
        "--param=tracing=true",
        "--param=apiDetailedMetrics=false",
    )


def of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {
        name: resource["Properties"]
        for name, resource in template["Resources"].items()
        if resource["Type"] == kind
    }


def alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each alarm's properties, by name less the stage's prefix (`items-throttles`)."""
    return {
        alarm["AlarmName"].removeprefix(f"{PREFIX}-"): alarm
        for alarm in of_type(template, "AWS::CloudWatch::Alarm").values()
    }


def watched(alarm: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every metric an alarm reads: its own, or each of its metric math's."""
    if "MetricName" in alarm:
        yield {key: alarm[key] for key in ("Namespace", "MetricName", "Dimensions")}
    for query in alarm.get("Metrics", []):
        if "MetricStat" in query:
            yield query["MetricStat"]["Metric"]


def dimensions(metric: dict[str, Any]) -> dict[str, Any]:
    return {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}


def function_settings(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each function of serverless.yml, by name, with its Lambda function's properties."""
    by_name = {f["FunctionName"]: f for f in of_type(template, "AWS::Lambda::Function").values()}
    return {f.name: by_name[f"{PREFIX}-{f.name}"] for f in SERVICE.functions}


def reserved(template: dict[str, Any], function: str) -> int:
    return int(function_settings(template)[function]["ReservedConcurrentExecutions"])


@pytest.mark.parametrize("packaged", ["template", "tuned"])
def test_cfn_lint_passes(packaged: str, request: pytest.FixtureRequest) -> None:
    done = cfn_lint(request.getfixturevalue(packaged))

    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("packaged", "params"), [("template", DEFAULTS), ("tuned", TUNED)])
def test_every_function_is_watched_with_the_stages_thresholds(
    packaged: str, params: dict[str, float], request: pytest.FixtureRequest
) -> None:
    chosen = request.getfixturevalue(packaged)
    by_name = alarms(chosen)
    settings = function_settings(chosen)

    for function in SERVICE.functions:
        lambda_name = f"{PREFIX}-{function.name}"
        timeout_ms = settings[function.name]["Timeout"] * 1000
        expected = {
            "errors": ("Errors", "Statistic", "Sum", params["alarmFunctionErrors"]),
            "throttles": ("Throttles", "Statistic", "Sum", params["alarmThrottles"]),
            "duration-near-timeout": (
                "Duration",
                "ExtendedStatistic",
                "p99",
                round(timeout_ms * params["alarmDurationPercentOfTimeout"] / 100),
            ),
            "concurrency": (
                "ConcurrentExecutions",
                "Statistic",
                "Maximum",
                math.ceil(
                    reserved(chosen, function.name) * params["alarmConcurrencyPercent"] / 100
                ),
            ),
        }
        for kind, (metric_name, statistic, value, threshold) in expected.items():
            alarm = by_name[f"{function.name}-{kind}"]
            assert alarm["Namespace"] == "AWS/Lambda"
            assert alarm["MetricName"] == metric_name
            assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": lambda_name}]
            assert alarm[statistic] == value
            assert float(alarm["Threshold"]) == threshold, (function.name, kind)
            assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        if function.routes:  # a function that answers HTTP; the monitor runs on a schedule
            rate = by_name[f"{function.name}-server-error-rate"]
            assert float(rate["Threshold"]) == params["alarmServerErrorPercent"]
    api_rate, budget = by_name["api-server-error-rate"], by_name["connection-budget"]
    assert float(api_rate["Threshold"]) == params["alarmServerErrorPercent"]
    assert float(budget["Threshold"]) == params["alarmConnectionBudgetPercent"]
    # The monitor publishes every minute: its silence is a failure no client would report.
    assert budget["TreatMissingData"] == "breaching"
    causes = [alarm for name, alarm in by_name.items() if name.startswith("503-")]
    assert len(causes) == 7
    assert {float(alarm["Threshold"]) for alarm in causes} == {
        params["alarmServiceUnavailablePercent"]
    }


def test_a_stages_own_reserved_concurrency_moves_its_alarm(tuned: dict[str, Any]) -> None:
    alarm = alarms(tuned)["items-concurrency"]

    assert reserved(tuned, "items") == TUNED_CONCURRENCY
    assert alarm["Threshold"] == math.ceil(
        TUNED_CONCURRENCY * TUNED["alarmConcurrencyPercent"] / 100
    )


def test_a_rate_alarm_divides_a_functions_5xx_by_all_its_answers(template: dict[str, Any]) -> None:
    alarm = alarms(template)["items-server-error-rate"]
    queries = {query["Id"]: query for query in alarm["Metrics"]}
    [returned] = [query for query in alarm["Metrics"] if query.get("ReturnData", True)]
    classes = {
        query_id: dimensions(query["MetricStat"]["Metric"])["status_class"]
        for query_id, query in queries.items()
        if "MetricStat" in query
    }

    assert classes.pop("errors") == "5xx"
    assert sorted(classes.values()) == ["2xx", "3xx", "4xx", "5xx"]
    expression = returned["Expression"]
    assert "100 * FILL(errors, 0)" in expression
    assert all(f"FILL({query_id}, 0)" in expression for query_id in classes)
    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (5, 3)


def test_alarms_notify_a_topic_the_stack_creates_by_default(template: dict[str, Any]) -> None:
    [(topic_id, topic)] = of_type(template, "AWS::SNS::Topic").items()

    assert topic["TopicName"] == f"{PREFIX}-alarms"
    for name, alarm in alarms(template).items():
        assert alarm["AlarmActions"] == [{"Ref": topic_id}], name
        assert alarm["OKActions"] == [{"Ref": topic_id}], name
    assert template["Outputs"]["AlarmTopicArn"]["Value"] == {"Ref": topic_id}


def test_with_an_existing_topic_no_topic_is_created_and_alarms_notify_it(
    tuned: dict[str, Any],
) -> None:
    assert of_type(tuned, "AWS::SNS::Topic") == {}
    for name, alarm in alarms(tuned).items():
        assert alarm["AlarmActions"] == [PAGER], name
        assert alarm["OKActions"] == [PAGER], name
    assert tuned["Outputs"]["AlarmTopicArn"]["Value"] == PAGER


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("alarmTopicArn=pager", "is not an SNS topic's ARN"),
        ("alarmThrottles=some", "is not a number of 0 or more"),
        ("alarmServerErrorPercent=-1", "is not a number of 0 or more"),
    ],
)
def test_a_threshold_or_topic_that_could_not_work_is_refused(
    param: str, message: str, deployable: Path, tmp_path: Path
) -> None:
    done = run_serverless_package(tmp_path, deployable, f"--param={param}")

    assert done.returncode != 0
    assert message in done.stdout + done.stderr


def test_every_alarm_on_a_custom_metric_watches_one_the_functions_publish(
    template: dict[str, Any],
) -> None:
    environment = next(iter(function_settings(template).values()))["Environment"]["Variables"]
    namespace = environment["POWERTOOLS_METRICS_NAMESPACE"]
    watched_names = set()

    for name, alarm in alarms(template).items():
        for metric in watched(alarm):
            if metric["Namespace"].startswith("AWS/"):
                continue
            spec = CATALOG[metric["MetricName"]]
            dimension_values = dimensions(metric)
            assert metric["Namespace"] == namespace, name
            assert dimension_values.pop("service") == environment["POWERTOOLS_SERVICE_NAME"]
            assert tuple(sorted(dimension_values)) in {
                tuple(sorted(dimension_set)) for dimension_set in spec.dimension_sets
            }, (name, metric["MetricName"], dimension_values)
            watched_names.add(metric["MetricName"])
    assert watched_names == {"Requests", "ServiceUnavailable", "ConnectionBudgetUsed"}


def test_each_stage_publishes_under_a_namespace_of_its_own(template: dict[str, Any]) -> None:
    namespaces = {
        function["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"]
        for function in function_settings(template).values()
    }

    assert namespaces == {f"{SERVICE.name}/{STAGE}"}


def dashboard_body(template: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """The dashboard's JSON, deploy-time values replaced by placeholders, and those values."""
    [dashboard] = of_type(template, "AWS::CloudWatch::Dashboard").values()
    separator, pieces = dashboard["DashboardBody"]["Fn::Join"]
    values = [piece for piece in pieces if not isinstance(piece, str)]
    text = separator.join(piece if isinstance(piece, str) else "@value@" for piece in pieces)
    body: dict[str, Any] = json.loads(text)
    return body, values


def test_the_dashboard_shows_the_alarms_the_api_and_every_published_metric(
    template: dict[str, Any],
) -> None:
    body, values = dashboard_body(template)
    text = json.dumps(body)
    access_log = template["Resources"]["HttpApiLogGroup"]["Properties"]["LogGroupName"]
    [log_widget] = [widget for widget in body["widgets"] if widget["type"] == "log"]
    alarm_ids = {
        name for name, r in template["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"
    }

    assert {value["Fn::GetAtt"][0] for value in values if "Fn::GetAtt" in value} == alarm_ids
    assert {"Ref": "HttpApi"} in values
    assert {"Ref": "AWS::Region"} in values
    assert f"SOURCE '{access_log}'" in log_widget["properties"]["query"]
    assert "bin(1m)" in log_widget["properties"]["query"]
    assert '"AWS/ApiGateway", "Count"' in text
    for metric_name in CATALOG:
        assert f'MetricName=\\"{metric_name}\\"' in text or f'"{metric_name}"' in text, metric_name


def test_the_dashboards_searches_name_published_dimension_sets(template: dict[str, Any]) -> None:
    body, _ = dashboard_body(template)
    searches = [
        line[0]["expression"]
        for widget in body["widgets"]
        for line in widget["properties"].get("metrics", [])
        if isinstance(line[0], dict)
    ]

    assert searches
    for expression in searches:
        match = re.search(r"\{\"[^\"]+\",([\w,]+)\}.*MetricName=\"(\w+)\"", expression)
        assert match, expression
        schema = set(match[1].split(",")) - {"service"}
        assert schema in [set(s) for s in CATALOG[match[2]].dimension_sets], expression


@pytest.mark.parametrize("packaged", ["template", "tuned"])
def test_tracing_is_a_switch_with_the_permission_it_needs(
    packaged: str, request: pytest.FixtureRequest
) -> None:
    chosen = request.getfixturevalue(packaged)
    tracing = packaged == "tuned"
    roles = of_type(chosen, "AWS::IAM::Role")

    for name, function in function_settings(chosen).items():
        role = roles[function["Role"]["Fn::GetAtt"][0]]
        if tracing:
            assert function["TracingConfig"] == {"Mode": "Active"}, name
            assert role["ManagedPolicyArns"] == [XRAY_POLICY], name
        else:
            assert "TracingConfig" not in function, name
            assert role["ManagedPolicyArns"] == [], name


def test_api_gateways_detailed_metrics_are_a_switch(
    template: dict[str, Any], tuned: dict[str, Any]
) -> None:
    def detailed(chosen: dict[str, Any]) -> Any:
        return chosen["Resources"]["HttpApiStage"]["Properties"]["DefaultRouteSettings"][
            "DetailedMetricsEnabled"
        ]

    assert detailed(template) is True
    assert detailed(tuned) is False
