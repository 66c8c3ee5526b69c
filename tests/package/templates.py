"""Run `serverless package` offline and lint what it writes; shared by the template tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from infra import PROJECT_ROOT
from infra.package import ARTIFACTS_DIR_VARIABLE

SERVERLESS = PROJECT_ROOT / "node_modules" / ".bin" / "serverless"
STAGE = "ci"
# The only finding, on every route: the framework adds a DependsOn that a Ref already implies.
FRAMEWORK_FINDINGS = ["W3005"]


def run_serverless_package(
    output: Path, artifacts: Path, *options: str
) -> subprocess.CompletedProcess[str]:
    """`serverless package --stage ci` for the zips in `artifacts`, with no AWS credentials."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "SUPABASE_")) and name != "DATABASE_URL"
    }
    env |= {
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        ARTIFACTS_DIR_VARIABLE: str(artifacts),
    }
    return subprocess.run(
        [str(SERVERLESS), "package", "--stage", STAGE, "--package", str(output), *options],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def serverless_package(output: Path, artifacts: Path, *options: str) -> dict[str, Any]:
    """The template `serverless package --stage ci` writes for the zips in `artifacts`."""
    done = run_serverless_package(output, artifacts, *options)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    path = output / "cloudformation-template-update-stack.json"
    loaded: dict[str, Any] = json.loads(path.read_text())
    loaded["__path__"] = str(path)
    return loaded


def cfn_lint(template: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """cfn-lint on a packaged template, ignoring only what the framework itself generates."""
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "cfn-lint"),
            "--ignore-checks",
            *FRAMEWORK_FINDINGS,
            "--",
            template["__path__"],
        ],
        capture_output=True,
        text=True,
    )


def packaged_both_ways(
    param: str, default: bool, deployable: Path, tmp_path_factory: Any
) -> dict[bool, dict[str, Any]]:
    """The packaged template as serverless.yml leaves a boolean param (`default`, so a change
    of the default shows), and with `--param` switching it the other way."""
    return {
        default: serverless_package(tmp_path_factory.mktemp(f"{param}-default"), deployable),
        not default: serverless_package(
            tmp_path_factory.mktemp(f"{param}-switched"),
            deployable,
            f"--param={param}={str(not default).lower()}",
        ),
    }
