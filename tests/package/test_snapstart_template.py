"""The SnapStart switch, packaged offline: versions, an alias, and the HTTP API calling it.

SnapStart applies to published versions only, so with `--param="snapStart=true"` each function
must get `SnapStart: PublishedVersions`, a version, an alias on that version, and API Gateway
must integrate with (and be allowed to invoke) the alias, not `$LATEST`. The control is the
default package, where none of that exists and the routes call the function itself.
What this cannot show offline: that AWS takes the snapshot, runs the hooks, and restores it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.service import HTTP_FUNCTIONS, SERVICE
from tests.package.templates import cfn_lint, packaged_both_ways

SNAPSTART_ALIAS = "snapstart"


@pytest.fixture(scope="module")
def templates(
    deployable: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[bool, dict[str, Any]]:
    """The packaged template with the switch off (the default) and on."""
    return packaged_both_ways("snapStart", False, deployable, tmp_path_factory)


def of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {n: r for n, r in template["Resources"].items() if r["Type"] == kind}


def http_functions() -> set[str]:
    """The logical ids of the functions API Gateway integrates with, as the framework names
    them (`items` -> `ItemsLambdaFunction`); the others run on a schedule."""
    return {
        name.capitalize().replace("_", "Underscore") + "LambdaFunction" for name in HTTP_FUNCTIONS
    }


def qualified_arn(function: str, alias: str) -> dict[str, Any]:
    return {"Fn::Join": [":", [{"Fn::GetAtt": [function, "Arn"]}, alias]]}


def test_each_function_publishes_a_snapstart_version_behind_an_alias(
    templates: dict[bool, dict[str, Any]],
) -> None:
    template = templates[True]
    functions = of_type(template, "AWS::Lambda::Function")
    versions = of_type(template, "AWS::Lambda::Version")
    aliases = of_type(template, "AWS::Lambda::Alias")

    assert len(functions) == len(SERVICE.functions)
    for name, function in functions.items():
        assert function["Properties"]["SnapStart"] == {"ApplyOn": "PublishedVersions"}
        assert function["Properties"]["Runtime"] >= "python3.12"
        assert "ProvisionedConcurrencyConfig" not in function["Properties"]
        [version] = [
            v for v, r in versions.items() if r["Properties"]["FunctionName"] == {"Ref": name}
        ]
        [alias] = [
            a["Properties"]
            for a in aliases.values()
            if a["Properties"]["FunctionName"] == {"Ref": name}
        ]
        assert alias["Name"] == SNAPSTART_ALIAS
        assert alias["FunctionVersion"] == {"Fn::GetAtt": [version, "Version"]}


def test_the_http_api_calls_the_alias_and_may_invoke_it(
    templates: dict[bool, dict[str, Any]],
) -> None:
    template = templates[True]
    functions = set(of_type(template, "AWS::Lambda::Function"))
    integrations = of_type(template, "AWS::ApiGatewayV2::Integration").values()
    permissions = of_type(template, "AWS::Lambda::Permission").values()

    targets = [i["Properties"]["IntegrationUri"] for i in integrations]
    allowed = [p["Properties"]["FunctionName"] for p in permissions]

    # Every function may be invoked through its alias only: by the HTTP API, or by a schedule.
    assert http_functions() < functions
    assert sorted(map(str, targets)) == sorted(
        str(qualified_arn(f, SNAPSTART_ALIAS)) for f in http_functions()
    )
    assert sorted(map(str, allowed)) == sorted(
        str(qualified_arn(f, SNAPSTART_ALIAS)) for f in functions
    )


def test_the_default_package_has_no_snapstart(templates: dict[bool, dict[str, Any]]) -> None:
    template = templates[False]
    functions = of_type(template, "AWS::Lambda::Function")
    integrations = of_type(template, "AWS::ApiGatewayV2::Integration").values()

    assert not any("SnapStart" in f["Properties"] for f in functions.values())
    assert of_type(template, "AWS::Lambda::Alias") == {}
    assert sorted(str(i["Properties"]["IntegrationUri"]) for i in integrations) == sorted(
        str({"Fn::GetAtt": [f, "Arn"]}) for f in http_functions()
    )


def test_cfn_lint_passes_with_snapstart(templates: dict[bool, dict[str, Any]]) -> None:
    done = cfn_lint(templates[True])

    assert done.returncode == 0, done.stdout + done.stderr
