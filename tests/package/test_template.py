"""`serverless package` offline, and what the CloudFormation template it writes grants.

No AWS account is reachable: the command must package with no credentials and no network,
cfn-lint must pass on the template, each function runs as a role of its own that may read only
the secrets that function uses (the pooler URL; the legacy JWT secret only for a function that
verifies tokens on a stage that accepts HS256 ones; never the migrations' URL), and no database
URL may appear anywhere in the template.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared._settings import Settings
from tests.fixtures.service import SERVICE, verifies_tokens
from tests.package.templates import STAGE, cfn_lint, serverless_package

SUPABASE_MICRO_POOLER_CLIENTS = 200


@pytest.fixture(scope="module")
def template(deployable: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The template `serverless package --stage ci` writes from the test build."""
    return serverless_package(tmp_path_factory.mktemp("serverless-package"), deployable)


def resources(template: dict[str, Any], kind: str) -> dict[str, Any]:
    return {
        name: resource["Properties"]
        for name, resource in template["Resources"].items()
        if resource["Type"] == kind
    }


def statements_of(template: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for role in resources(template, "AWS::IAM::Role").values():
        for policy in role.get("Policies", []):
            yield from policy["PolicyDocument"]["Statement"]


def test_cfn_lint_passes(template: dict[str, Any]) -> None:
    done = cfn_lint(template)

    assert done.returncode == 0, done.stdout + done.stderr


FUNCTION_SECRETS = ("DatabaseUrlSecret", "SupabaseJwtSecret")


@pytest.fixture(scope="module")
def legacy_template(deployable: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The template of a stage that names its Supabase project and accepts HS256 tokens."""
    return serverless_package(
        tmp_path_factory.mktemp("serverless-package-legacy"),
        deployable,
        "--param=supabaseUrl=https://abcdefghijklmnop.supabase.co",
        "--param=legacyJwtSecret=true",
    )


def role_of_each_function(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each function of serverless.yml, by name, with the role its Lambda function runs as."""
    roles = resources(template, "AWS::IAM::Role")
    by_name = {
        function["FunctionName"]: roles[function["Role"]["Fn::GetAtt"][0]]
        for function in resources(template, "AWS::Lambda::Function").values()
    }
    return {
        function.name: by_name[f"{SERVICE.name}-{STAGE}-{function.name}"]
        for function in SERVICE.functions
    }


def role_statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for policy in role["Policies"] for s in policy["PolicyDocument"]["Statement"]]


def test_each_function_runs_as_a_role_of_its_own(template: dict[str, Any]) -> None:
    roles = role_of_each_function(template)

    assert len(resources(template, "AWS::IAM::Role")) == len(SERVICE.functions)
    assert len({json.dumps(role, sort_keys=True) for role in roles.values()}) == len(roles)
    assert "IamRoleLambdaExecution" not in template["Resources"]  # the framework's shared role


@pytest.mark.parametrize("legacy", [False, True], ids=["legacy-secret-off", "legacy-secret-on"])
def test_each_role_reads_only_the_secrets_its_function_uses(
    legacy: bool, template: dict[str, Any], legacy_template: dict[str, Any]
) -> None:
    packaged = legacy_template if legacy else template
    log_groups = {
        group["LogGroupName"] for group in resources(packaged, "AWS::Logs::LogGroup").values()
    }

    for function in SERVICE.functions:
        statements = role_statements(role_of_each_function(packaged)[function.name])
        secrets = [s for s in statements if "secretsmanager" in json.dumps(s["Action"])]
        logs = [s for s in statements if s not in secrets]
        reads_legacy_secret = legacy and verifies_tokens(function)
        expected = ["DatabaseUrlSecret", *(["SupabaseJwtSecret"] if reads_legacy_secret else [])]

        assert secrets == [
            {
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": [{"Ref": name} for name in expected],
            }
        ], function.name
        # The basic execution rights, on the function's own log group only.
        log_group = f"/aws/lambda/{SERVICE.name}-{STAGE}-{function.name}"
        assert log_group in log_groups
        assert logs == [
            {
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": {
                    "Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}"
                    f":log-group:{log_group}:*"
                },
            }
        ], function.name
    for statement in statements_of(packaged):
        assert statement["Resource"] != "*"
        assert "*" not in json.dumps(statement["Action"])
    # By type: an alarm on 503s whose cause is an unreadable secret is named for it too.
    secret_types = {
        name: r["Type"]
        for name, r in packaged["Resources"].items()
        if r["Type"].startswith("AWS::SecretsManager::")
    }
    assert secret_types == dict.fromkeys(
        (*FUNCTION_SECRETS, "DirectDatabaseUrlSecret"), "AWS::SecretsManager::Secret"
    )


def test_cfn_lint_passes_with_the_legacy_secret_on(legacy_template: dict[str, Any]) -> None:
    done = cfn_lint(legacy_template)

    assert done.returncode == 0, done.stdout + done.stderr


def test_functions_get_the_secret_arn_never_a_url(template: dict[str, Any]) -> None:
    functions = resources(template, "AWS::Lambda::Function")
    text = json.dumps(template["Resources"])

    assert functions
    for function in functions.values():
        variables = function["Environment"]["Variables"]
        assert variables["DATABASE_SECRET_ARN"] == {"Ref": "DatabaseUrlSecret"}
        assert not {"DATABASE_URL", "DIRECT_DATABASE_URL"} & set(variables)
        # Unless the stage opts in, HS256 tokens are refused: no legacy secret to check them.
        assert variables["SUPABASE_JWT_SECRET_ARN"] == ""
        assert variables["SUPABASE_URL"] == ""
    for forbidden in ("postgres://", "postgresql://", '"SecretString"'):
        assert forbidden not in text


def test_functions_fit_the_timeouts_the_runtime_and_the_pooler(
    template: dict[str, Any],
) -> None:
    functions = resources(template, "AWS::Lambda::Function").values()
    defaults = Settings(_env_file=None)
    runtime = f"python{sys.version_info.major}.{sys.version_info.minor}"

    for function in functions:
        variables = function["Environment"]["Variables"]
        connect_s = int(variables.get("DB_CONNECT_TIMEOUT", defaults.db_connect_timeout))
        statement_s = (
            int(variables.get("DB_STATEMENT_TIMEOUT_MS", defaults.db_statement_timeout_ms)) / 1000
        )
        assert function["Timeout"] > connect_s + statement_s
        assert function["Runtime"] == runtime  # the tests run on the Lambda runtime's Python
        assert function["Architectures"] == [SERVICE.architecture]
        assert function["ReservedConcurrentExecutions"] >= 1
    assert sum(f["ReservedConcurrentExecutions"] for f in functions) < SUPABASE_MICRO_POOLER_CLIENTS


def test_every_route_has_its_log_retention(template: dict[str, Any]) -> None:
    log_groups = resources(template, "AWS::Logs::LogGroup")
    access_log = log_groups.pop("HttpApiLogGroup")  # the API's (test_http_api_template.py)

    assert len(log_groups) == len(resources(template, "AWS::Lambda::Function"))
    assert all(group["RetentionInDays"] > 0 for group in log_groups.values())
    assert access_log["RetentionInDays"] > 0


def test_the_http_api_routes_each_declared_route_to_its_function(template: dict[str, Any]) -> None:
    names = {
        logical_id: function["FunctionName"]
        for logical_id, function in resources(template, "AWS::Lambda::Function").items()
    }
    integrated = {
        logical_id: names[integration["IntegrationUri"]["Fn::GetAtt"][0]]
        for logical_id, integration in resources(template, "AWS::ApiGatewayV2::Integration").items()
    }

    routed = {
        route["RouteKey"]: integrated[route["Target"]["Fn::Join"][1][1]["Ref"]]
        for route in resources(template, "AWS::ApiGatewayV2::Route").values()
    }

    assert routed == {
        route.key: f"{SERVICE.name}-{STAGE}-{function.name}"
        for route, function in SERVICE.routes.items()
    }


def test_a_stage_names_its_supabase_project_and_may_opt_into_the_legacy_secret(
    legacy_template: dict[str, Any],
) -> None:
    template = legacy_template

    for function in resources(template, "AWS::Lambda::Function").values():
        variables = function["Environment"]["Variables"]
        assert variables["SUPABASE_URL"] == "https://abcdefghijklmnop.supabase.co"
        assert variables["SUPABASE_JWT_SECRET_ARN"] == {"Ref": "SupabaseJwtSecret"}
    placeholder = template["Resources"]["SupabaseJwtSecret"]["Properties"]["GenerateSecretString"]
    # A JSON object: the functions read it as "not set" (shared/_tokens.py), never as a secret.
    assert json.loads(placeholder["SecretStringTemplate"])
