"""What `make package` and `make deploy` refuse before building anything, and which region
and credentials every stage command uses: moto's AWS, no network."""

from __future__ import annotations

import io
import subprocess
import zipfile
from pathlib import Path

import boto3
import pytest

from infra import PROJECT_ROOT
from infra.serverless_config import read_stage_config
from infra.stage import NO_CREDENTIALS, StageError, check, main, secret_name
from tests.fixtures.aws import LambdaAccount

STAGE = "ci"
SUPABASE_URL = "https://abcdefghijklmnopqrst.supabase.co"
STACK_TOTAL = read_stage_config(STAGE).total_reserved_concurrency


@pytest.fixture(autouse=True)
def fresh_boto3_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3's default session keeps the credentials and profile it first found: forget them,
    as a new `make` command would, so no earlier test's answer stands in for this one's."""
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)


@pytest.fixture
def supabase_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_URL", SUPABASE_URL)


def test_package_stops_in_one_line_naming_what_to_set_without_a_supabase_url(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        ["make", "--no-print-directory", "package", f"STAGE={STAGE}"],
        cwd=PROJECT_ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ARTIFACTS_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
    )

    assert done.returncode != 0
    assert done.stderr.splitlines()[0] == (
        f"supabaseUrl is empty for stage {STAGE}: set SUPABASE_URL=https://<ref>.supabase.co "
        f"(or params.{STAGE}.supabaseUrl in serverless.yml)"
    )
    assert "infra.package build" not in done.stdout
    assert list(tmp_path.glob("*.zip")) == []


def test_a_supabase_url_in_the_stage_params_is_enough(tmp_path: Path) -> None:
    config = tmp_path / "serverless.yml"
    text = (PROJECT_ROOT / "serverless.yml").read_text()
    config.write_text(text.replace("params:\n", f"params:\n  {STAGE}:\n    supabaseUrl: x\n", 1))

    assert read_stage_config(STAGE, environ={}, config_file=config).supabase_url == "x"
    assert read_stage_config("other", environ={}, config_file=config).supabase_url == ""


def test_an_empty_supabase_url_is_refused_even_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_URL", " ")

    with pytest.raises(StageError, match="set SUPABASE_URL="):
        check(STAGE, offline=True)


def create_function(name: str, reserved: int, region: str) -> None:
    """A deployed function in moto reserving `reserved` concurrent executions."""
    iam = boto3.client("iam", region_name=region)
    role = iam.create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context): pass\n")
    client = boto3.client("lambda", region_name=region)
    client.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=role,
        Handler="handler.handler",
        Code={"ZipFile": code.getvalue()},
    )
    client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=reserved)


def test_deploy_check_accepts_a_stage_that_fits(
    lambda_account: LambdaAccount, supabase_url: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--stage", STAGE]) == 0

    out = capsys.readouterr().out
    assert f"reserved concurrency {STACK_TOTAL} of 900 available" in out


@pytest.mark.parametrize(("quota", "others", "fits"), [(10, 0, 0), (300, 150, 50)])
def test_deploy_check_refuses_with_the_number_that_would_fit(
    lambda_account: LambdaAccount,
    supabase_url: None,
    capsys: pytest.CaptureFixture[str],
    quota: int,
    others: int,
    fits: int,
) -> None:
    lambda_account.set_quota(quota)
    if others:
        create_function("someone-else", others, read_stage_config(STAGE).region)

    assert main(["check", "--stage", STAGE]) == 1

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"reserves {STACK_TOTAL} concurrent executions but the account can reserve {fits}" in err


def test_a_redeploy_counts_what_the_stack_reserves_already(
    lambda_account: LambdaAccount, supabase_url: None
) -> None:
    config = read_stage_config(STAGE)
    lambda_account.set_quota(STACK_TOTAL + 100 + 5)  # 5 to spare once the stack's are counted
    for function, reserved in config.reserved_concurrency.items():
        create_function(config.function_names[function], reserved, config.region)

    assert f"of {STACK_TOTAL + 5} available" in check(STAGE)


PROFILE_REGION, ENV_REGION = "eu-west-1", "eu-north-1"


@pytest.fixture
def profile_and_env_disagree(aws: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An AWS profile naming one region, AWS_REGION another, AWS_DEFAULT_REGION unset."""
    monkeypatch.delenv("DIRECT_DATABASE_URL", raising=False)  # `migrate` reads the secret
    config = tmp_path / "aws-config"
    config.write_text(f"[profile deployer]\nregion = {PROFILE_REGION}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_PROFILE", "deployer")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_REGION", ENV_REGION)


def test_secret_goes_to_the_region_serverless_deploys_to(
    profile_and_env_disagree: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = secret_name(STAGE)
    for region in (PROFILE_REGION, ENV_REGION):
        boto3.client("secretsmanager", region_name=region).create_secret(
            Name=name, SecretString="placeholder"
        )
    monkeypatch.setattr("sys.stdin", io.StringIO("postgres://u:p@db.example.com:6543/postgres\n"))

    assert main(["secret", "--stage", STAGE]) == 0

    def stored(region: str) -> str:
        client = boto3.client("secretsmanager", region_name=region)
        return str(client.get_secret_value(SecretId=name)["SecretString"])

    assert read_stage_config(STAGE).region == ENV_REGION
    assert stored(ENV_REGION).startswith("postgres://")
    assert stored(PROFILE_REGION) == "placeholder"


def test_migrate_and_check_read_the_region_serverless_deploys_to(
    profile_and_env_disagree: None,
    lambda_account: LambdaAccount,
    supabase_url: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Only AWS_REGION's region has the stage's secret and room for its reservations."""
    boto3.client("secretsmanager", region_name=ENV_REGION).create_secret(
        Name=secret_name(STAGE, direct=True), SecretString="placeholder"
    )
    lambda_account.set_quota(STACK_TOTAL + 100 + 50)  # 50 to spare, where nothing else reserves
    create_function("someone-else", 100, PROFILE_REGION)

    assert main(["migrate", "--stage", STAGE]) == 1
    assert main(["check", "--stage", STAGE]) == 0
    assert main(["check", "--stage", STAGE, "--region", PROFILE_REGION]) == 1

    output = capsys.readouterr()
    migrate_err, option_err = output.err.splitlines()
    assert migrate_err.endswith(f"holds no URL yet: run `make secret STAGE={STAGE} SECRET=direct`")
    assert f"of {STACK_TOTAL + 50} available in {ENV_REGION}" in output.out
    assert f"can reserve {STACK_TOTAL - 50} in {PROFILE_REGION}" in option_err


@pytest.mark.parametrize(
    "argv",
    [["secret", "--stage", STAGE], ["migrate", "--stage", STAGE], ["check", "--stage", STAGE]],
)
def test_missing_credentials_are_one_line(
    argv: list[str],
    supabase_url: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_REGION", ENV_REGION)  # only the region: no NoRegionError either
    monkeypatch.delenv("DIRECT_DATABASE_URL", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO("postgres://u:p@db.example.com:6543/postgres\n"))

    assert main(argv) == 1

    assert capsys.readouterr().err == f"{NO_CREDENTIALS}\n"
