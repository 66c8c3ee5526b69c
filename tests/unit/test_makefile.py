"""What the Makefile's operational targets run, read with `make -n` (nothing is executed)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from infra import PROJECT_ROOT
from tests.fixtures.service import SERVICE


def planned(*args: str) -> list[str]:
    """The commands `make` would run for these arguments, installation steps left out."""
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [
        line
        for line in done.stdout.splitlines()
        if line and not line.startswith(("touch .venv", "npm ci")) and " sync " not in line
    ]


@pytest.mark.parametrize(("target", "serverless"), [("deploy", "deploy"), ("package", "package")])
def test_deploy_and_package_rebuild_then_verify_right_before_serverless(
    target: str, serverless: str
) -> None:
    build, verify, run = planned(target, "STAGE=ci")[-3:]

    assert build.endswith("python -m infra.package build")
    assert verify.endswith("python -m infra.package verify")
    assert run.endswith(f"serverless {serverless} --stage ci")


def test_the_architecture_is_not_a_make_variable() -> None:
    text = (PROJECT_ROOT / "Makefile").read_text()

    assert "ARCH" not in text
    assert "LAMBDA_ARCHITECTURE" not in text
    assert all("--arch" not in command for command in planned("deploy", "STAGE=ci"))


def test_migrate_without_a_stage_uses_the_settings_and_with_one_the_stage_secret() -> None:
    assert planned("migrate")[-1].endswith("python -m infra.migrate")
    assert planned("migrate", "STAGE=ci")[-1].endswith("python -m infra.stage migrate --stage ci")


def test_migration_autogenerates_a_revision_with_the_message() -> None:
    assert planned("migration", "MSG=add orders")[-1].endswith(
        'python -m infra.migrate revision -m "add orders"'
    )


def test_migration_goes_on_the_branch_of_the_function_given() -> None:
    assert planned("migration", "MSG=add orders", "FUNCTION=orders")[-1].endswith(
        'python -m infra.migrate revision -m "add orders" --function orders'
    )


@pytest.mark.parametrize(
    ("target", "example"),
    [("migration", 'make migration MSG="add orders"'), ("function", "make function NAME=orders")],
)
def test_a_target_missing_its_argument_says_how_to_give_it(target: str, example: str) -> None:
    done = subprocess.run(["make", "-n", target], cwd=PROJECT_ROOT, capture_output=True, text=True)

    assert done.returncode != 0
    assert example in done.stderr


def test_unit_target_deselects_every_test_that_needs_a_server_or_a_build() -> None:
    [command] = planned("test-unit")

    assert command.endswith('pytest -m "not (integration or e2e or package)"')


def test_function_scaffolds_with_a_kind_only_when_one_is_given() -> None:
    assert planned("function", "NAME=orders")[-1].endswith("python -m infra.scaffold orders")
    assert planned("function", "NAME=orders", "KIND=plain")[-1].endswith(
        "python -m infra.scaffold orders --kind plain"
    )


def test_secret_jwt_stores_the_legacy_jwt_secret() -> None:
    assert planned("secret", "STAGE=ci", "SECRET=jwt")[-1].endswith(
        "python -m infra.stage secret --stage ci --jwt"
    )


def test_token_takes_user_and_role_from_the_command_line_only() -> None:
    user = "7d3f1c2e-0000-4000-8000-000000000001"
    env = {**os.environ, "USER": "root"}  # the shell's login name is not a user id

    given = planned("token", f"USER={user}", "ROLE=service_role")[-1]
    default = subprocess.run(
        ["make", "--no-print-directory", "-n", "token"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=True,
    ).stdout.splitlines()[-1]  # fmt: skip

    assert given.endswith(f"python -m infra.local_auth token --user {user} --role service_role")
    assert default.rstrip().endswith("python -m infra.local_auth token")


def test_make_test_installs_the_browser_the_e2e_tests_drive() -> None:
    [check] = [line for line in planned("test") if "command -v chromium" in line]

    assert "apt-get install -y -qq chromium" in check
    assert "sudo apt-get install -y chromium" in check  # what a non-root user is told to run


@pytest.mark.parametrize(("target", "check"), [("deploy", "check"), ("package", "check --offline")])
def test_deploy_and_package_check_the_stage_before_building(target: str, check: str) -> None:
    commands = planned(target, "STAGE=ci")
    first = next(i for i, command in enumerate(commands) if "python -m infra." in command)

    assert commands[first].endswith(f"python -m infra.stage {check} --stage ci")
    assert commands[first + 1].endswith("python -m infra.package build")


@pytest.mark.parametrize("target", ["deploy", "package", "remove", "secret", "migrate", "logs"])
def test_region_goes_to_serverless_and_every_stage_command_alike(target: str) -> None:
    aws_commands = [
        command
        for command in planned(target, "STAGE=ci", "REGION=eu-west-1")
        if "infra.stage" in command or "serverless " in command
    ]

    assert aws_commands
    assert all("--region eu-west-1" in command for command in aws_commands)
    assert all("--region" not in command for command in planned(target, "STAGE=ci"))


def test_logs_tails_the_function_given() -> None:
    assert planned("logs", "STAGE=ci", "FUNCTION=items")[-1].endswith(
        "serverless logs --function items --tail --stage ci"
    )


def test_logs_without_a_function_tails_every_function_of_serverless_yml() -> None:
    script = "\n".join(planned("logs", "STAGE=ci"))
    listed = subprocess.run(
        [sys.executable, "-m", "infra.package", "functions"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip

    assert "for function in $(" in script
    assert "python -m infra.package functions); do" in script
    assert "serverless logs --function $function --tail --interval 3000 --stage ci" in script
    assert listed == [function.name for function in SERVICE.functions]
