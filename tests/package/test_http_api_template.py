"""The HTTP API's stage in the packaged template: CORS from the `corsOrigins` param, default
throttling, and JSON access logs kept as long as the functions' logs.

Browsers call the API only from the origins a stage names; with none named (the default) the
API has no CORS configuration, so API Gateway answers no preflight and browsers refuse.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.service import SERVICE
from tests.package.templates import cfn_lint, run_serverless_package, serverless_package

FRONTENDS = ("https://app.example.com", "https://admin.example.com")


@pytest.fixture(scope="module")
def template(deployable: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The template with serverless.yml's defaults."""
    return serverless_package(tmp_path_factory.mktemp("http-api-default"), deployable)


@pytest.fixture(scope="module")
def named(deployable: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The template of a stage that names two frontends and its own throttling."""
    return serverless_package(
        tmp_path_factory.mktemp("http-api-named"),
        deployable,
        f"--param=corsOrigins={','.join(FRONTENDS)}",
        "--param=throttlingRateLimit=20",
        "--param=throttlingBurstLimit=40",
    )


def api_properties(template: dict[str, Any]) -> dict[str, Any]:
    [api] = [r for r in template["Resources"].values() if r["Type"] == "AWS::ApiGatewayV2::Api"]
    properties: dict[str, Any] = api["Properties"]
    return properties


def stage_properties(template: dict[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = template["Resources"]["HttpApiStage"]["Properties"]
    return properties


def test_by_default_no_origin_may_call_the_api_from_a_browser(template: dict[str, Any]) -> None:
    assert "CorsConfiguration" not in api_properties(template)


def test_a_stage_names_its_frontends_origins(named: dict[str, Any]) -> None:
    cors = api_properties(named)["CorsConfiguration"]

    assert cors["AllowOrigins"] == list(FRONTENDS)
    assert cors["AllowHeaders"] == ["authorization", "content-type"]
    assert set(cors["AllowMethods"]) == {"OPTIONS"} | {r.method for r in SERVICE.routes}
    assert cors["ExposeHeaders"] == ["www-authenticate", "retry-after", "apigw-requestid"]
    assert cors["MaxAge"] > 0
    # Tokens go in the Authorization header; no cookie ever needs to cross origins.
    assert not cors.get("AllowCredentials")
    done = cfn_lint(named)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "origins", ["*", "https://app.example.com/", "app.example.com", "https://*.example.com"]
)
def test_a_wildcard_or_an_origin_that_would_match_nothing_is_refused(
    origins: str, deployable: Path, tmp_path: Path
) -> None:
    done = run_serverless_package(tmp_path, deployable, f"--param=corsOrigins={origins}")

    assert done.returncode != 0
    assert "is not an origin" in done.stdout + done.stderr


def test_the_stage_throttles_every_route_by_default(
    template: dict[str, Any], named: dict[str, Any]
) -> None:
    default = stage_properties(template)["DefaultRouteSettings"]
    chosen = stage_properties(named)["DefaultRouteSettings"]

    assert (default["ThrottlingRateLimit"], default["ThrottlingBurstLimit"]) == (100, 200)
    assert (int(chosen["ThrottlingRateLimit"]), int(chosen["ThrottlingBurstLimit"])) == (20, 40)
    assert default["DetailedMetricsEnabled"] is True  # per-route metrics: params.apiDetailedMetrics


def test_the_stage_writes_json_access_logs_kept_like_the_functions_logs(
    template: dict[str, Any],
) -> None:
    settings = stage_properties(template)["AccessLogSettings"]
    groups = {
        name: resource["Properties"]
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Logs::LogGroup"
    }
    access_log = groups.pop("HttpApiLogGroup")

    assert settings["DestinationArn"] == {"Fn::GetAtt": ["HttpApiLogGroup", "Arn"]}
    line = json.loads(settings["Format"])
    assert line["requestId"] == "$context.requestId"
    assert line["sourceIp"] == "$context.identity.sourceIp"
    assert line["routeKey"] == "$context.routeKey"
    assert line["status"] == "$context.status"
    assert line["latencyMs"] == "$context.responseLatency"
    assert line["integrationError"] == "$context.integrationErrorMessage"
    assert {group["RetentionInDays"] for group in groups.values()} == {
        access_log["RetentionInDays"]
    }
