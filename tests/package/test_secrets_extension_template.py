"""The Parameters and Secrets Lambda Extension, packaged offline: its layer and its settings.

On (the default), every function gets AWS's layer for the stack's architecture, resolved by
CloudFormation from AWS's public parameter (so any region), the port that tells
shared/_secrets.py to use it, its cache off and a bound on its calls to Secrets Manager. Off,
no layer and an empty port: boto3 reads the secrets. Both package with no credentials and
pass cfn-lint. What this cannot show offline: that the layer starts and answers on Lambda.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import PROJECT_ROOT
from infra.package import PLATFORMS
from shared._secrets import EXTENSION_PORT_VARIABLE
from tests.fixtures.service import SERVICE
from tests.package.templates import cfn_lint, packaged_both_ways

PUBLIC_PARAMETER = "/aws/service/aws-parameters-and-secrets-lambda-extension/{}/latest"
"""Where AWS publishes the latest layer ARN per architecture."""
PUBLIC_ARCHITECTURE_NAMES = {"arm64": "arm64", "x86_64": "x86"}


@pytest.fixture(scope="module")
def templates(
    deployable: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[bool, dict[str, Any]]:
    """The packaged template with the extension on (the default) and off."""
    return packaged_both_ways("secretsExtension", True, deployable, tmp_path_factory)


def functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: resource["Properties"]
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Lambda::Function"
    }


def resolved_layer(layer: dict[str, Any]) -> str:
    """What CloudFormation makes of the layer's `Fn::Sub`, up to its dynamic reference."""
    template, variables = layer["Fn::Sub"]
    for name, value in variables.items():
        template = template.replace(f"${{{name}}}", value)
    assert "${" not in template
    return str(template)


def test_every_function_gets_the_layer_for_its_architecture(
    templates: dict[bool, dict[str, Any]],
) -> None:
    architecture = PUBLIC_ARCHITECTURE_NAMES[SERVICE.architecture]
    expected = f"{{{{resolve:ssm:{PUBLIC_PARAMETER.format(architecture)}}}}}"

    packaged = functions(templates[True])

    assert packaged
    for function in packaged.values():
        [layer] = function["Layers"]
        assert resolved_layer(layer) == expected
        variables = function["Environment"]["Variables"]
        assert variables[EXTENSION_PORT_VARIABLE] == "2773"
        assert variables["PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED"] == "FALSE"
        assert 0 < int(variables["SECRETS_MANAGER_TIMEOUT_MILLIS"]) <= 1000


def test_every_architecture_the_build_knows_has_a_layer() -> None:
    """A switch of provider.architecture finds the public parameter of the other one too."""
    config = yaml.safe_load((PROJECT_ROOT / "serverless.yml").read_text())

    assert config["custom"]["secretsExtensionArchitecture"] == PUBLIC_ARCHITECTURE_NAMES
    assert set(PUBLIC_ARCHITECTURE_NAMES) == set(PLATFORMS)


def test_switched_off_there_is_no_layer_and_no_port(
    templates: dict[bool, dict[str, Any]],
) -> None:
    for function in functions(templates[False]).values():
        assert function.get("Layers", []) == []
        assert function["Environment"]["Variables"][EXTENSION_PORT_VARIABLE] == ""


@pytest.mark.parametrize("switched_on", [True, False])
def test_cfn_lint_passes_with_and_without_the_extension(
    templates: dict[bool, dict[str, Any]], switched_on: bool
) -> None:
    done = cfn_lint(templates[switched_on])

    assert done.returncode == 0, done.stdout + done.stderr
