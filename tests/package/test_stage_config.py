"""infra/serverless_config.py against `serverless print` (offline): the region, the Supabase
URL and the reserved concurrency the stage commands use are those `serverless` deploys with."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from infra import PROJECT_ROOT
from infra.serverless_config import read_stage_config
from tests.fixtures.aws import AWS_REGION

SERVERLESS = PROJECT_ROOT / "node_modules" / ".bin" / "serverless"
PROFILE_REGION = "eu-west-1"


def serverless_print(env: dict[str, str], *options: str) -> dict[str, Any]:
    done = subprocess.run(
        [str(SERVERLESS), "print", "--stage", "dev", "--format", "json", *options],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    printed: dict[str, Any] = json.loads(done.stdout)
    return printed


@pytest.mark.parametrize("region_option", [None, "ap-south-1"])
def test_stage_commands_resolve_what_serverless_prints(
    tmp_path: Path, region_option: str | None
) -> None:
    """The profile names one region, AWS_REGION another (and the conftest left neither)."""
    config = tmp_path / "aws-config"
    config.write_text(f"[profile deployer]\nregion = {PROFILE_REGION}\n")
    env = {
        **os.environ,
        "AWS_CONFIG_FILE": str(config),
        "AWS_PROFILE": "deployer",
        "AWS_REGION": AWS_REGION,
        "SUPABASE_URL": "https://abcdefghijklmnopqrst.supabase.co",
    }

    printed = serverless_print(env, *(["--region", region_option] if region_option else []))
    ours = read_stage_config("dev", region_option, env)

    assert ours.region == printed["provider"]["region"]
    assert ours.region == (region_option or AWS_REGION)
    assert ours.supabase_url == printed["provider"]["environment"]["SUPABASE_URL"]
    assert ours.reserved_concurrency == {
        name: spec["reservedConcurrency"] for name, spec in printed["functions"].items()
    }
    assert ours.function_names == {
        name: spec["name"] for name, spec in printed["functions"].items()
    }
