"""The GitHub Actions workflow users of the template get: valid, pinned, least privilege.

actionlint cannot be installed here (its PyPI wrapper downloads the binary at build time), so
the workflow is validated against the GitHub workflow JSON schema vendored by check-jsonschema.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from infra import PROJECT_ROOT

WORKFLOW = PROJECT_ROOT / ".github" / "workflows" / "ci.yml"


def workflow() -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return loaded


def steps(job: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = workflow()["jobs"][job]["steps"]
    return found


def test_workflow_matches_the_github_schema() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    done = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True,
        text=True,
    )

    assert done.returncode == 0, done.stdout + done.stderr


def test_every_action_is_pinned_to_a_commit() -> None:
    uses = [step["uses"] for job in workflow()["jobs"] for step in steps(job) if "uses" in step]

    assert uses
    for action in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", action), action


def test_permissions_are_least_privilege() -> None:
    jobs = workflow()["jobs"]

    assert workflow()["permissions"] == {"contents": "read"}
    assert "permissions" not in jobs["test"]
    assert jobs["deploy"]["permissions"] == {"contents": "read", "id-token": "write"}


def test_pull_requests_run_make_test_and_only_main_deploys() -> None:
    jobs = workflow()["jobs"]
    # PyYAML reads the key `on` as the boolean True (YAML 1.1).
    triggers = workflow()[True]

    assert "pull_request" in triggers
    assert triggers["push"]["branches"] == ["main"]
    assert any(step.get("run") == "make test" for step in steps("test"))
    assert jobs["deploy"]["needs"] == "test"
    assert "refs/heads/main" in jobs["deploy"]["if"]
    assert "aws-access-key-id" not in WORKFLOW.read_text()
    role_step = next(s for s in steps("deploy") if "configure-aws-credentials" in s.get("uses", ""))
    assert set(role_step["with"]) == {"role-to-assume", "aws-region"}


def test_deploy_passes_the_supabase_project_url_from_a_repository_variable() -> None:
    deploy = workflow()["jobs"]["deploy"]

    assert deploy["env"]["SUPABASE_URL"] == "${{ vars.SUPABASE_URL }}"
    assert any(step.get("run") == 'make deploy STAGE="$STAGE"' for step in steps("deploy"))
