"""`make secret` and `make migrate STAGE=...` against moto's Secrets Manager and the local
stack: URLs (and the legacy JWT secret) go into the stack's secrets, migrations run over the
direct URL only."""

from __future__ import annotations

import io

import boto3
import psycopg
import pytest

from infra.local_stack import LocalStack
from infra.stage import StageError, main, migrate, put_secret, secret_name
from shared._database_url import MIGRATIONS_NEED_A_SESSION

STAGE = "ci"
SUPABASE_POOLER = (
    "postgres://postgres.ref:{password}@aws-0-eu-central-1.pooler.supabase.com:{port}/postgres"
)


@pytest.fixture
def stage_secrets(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The two secrets `serverless deploy` creates for a stage, in moto."""
    monkeypatch.delenv("DIRECT_DATABASE_URL", raising=False)
    client = boto3.client("secretsmanager")
    for direct in (False, True):
        client.create_secret(Name=secret_name(STAGE, direct=direct), SecretString="placeholder")


def stored(direct: bool) -> str:
    value: str = boto3.client("secretsmanager").get_secret_value(
        SecretId=secret_name(STAGE, direct=direct)
    )["SecretString"]
    return value


def test_pooler_url_is_stored_in_the_functions_secret(stage_secrets: None) -> None:
    url = SUPABASE_POOLER.format(password="p%40ss", port=6543)

    name = put_secret(STAGE, url, direct=False)

    assert name == f"serverless-python-postgres/{STAGE}/database-url"
    assert stored(direct=False) == url
    assert stored(direct=True) == "placeholder"


@pytest.mark.parametrize(
    ("url", "direct"),
    [
        (SUPABASE_POOLER.format(password="hunter2", port=6543), True),  # migrations via 6543
        (SUPABASE_POOLER.format(password="hunter2", port=5432), False),  # functions via 5432
        ("hunter2 is not a url", False),
    ],
)
def test_urls_that_cannot_serve_their_purpose_are_refused_unechoed(
    stage_secrets: None, url: str, direct: bool
) -> None:
    with pytest.raises(StageError) as caught:
        put_secret(STAGE, url, direct=direct)

    assert "hunter2" not in str(caught.value)
    assert stored(direct=direct) == "placeholder"


def test_missing_stack_says_to_deploy_first(aws: None) -> None:
    with pytest.raises(StageError, match="make deploy STAGE=nowhere"):
        put_secret("nowhere", SUPABASE_POOLER.format(password="x", port=6543), direct=False)


def test_migrate_reads_the_direct_secret_and_upgrades(
    stage_secrets: None, database: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", database.pooler_url())  # must not be used
    put_secret(STAGE, database.direct_url(), direct=True)

    migrate(STAGE)

    with psycopg.connect(database.direct_url()) as conn:
        versions = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    assert versions == [("0003",)]  # the items head, which depends on the platform's


def test_migrate_refuses_a_transaction_pooler_secret(
    stage_secrets: None, capsys: pytest.CaptureFixture[str]
) -> None:
    boto3.client("secretsmanager").put_secret_value(
        SecretId=secret_name(STAGE, direct=True),
        SecretString=SUPABASE_POOLER.format(password="hunter2", port=6543),
    )

    exit_code = main(["migrate", "--stage", STAGE])

    assert exit_code == 1
    assert capsys.readouterr().err == f"{MIGRATIONS_NEED_A_SESSION}\n"


def test_migrate_before_the_direct_secret_is_set_says_what_to_run(stage_secrets: None) -> None:
    with pytest.raises(StageError, match=f"make secret STAGE={STAGE} SECRET=direct"):
        migrate(STAGE)


def test_migrate_refuses_a_transaction_pooler_in_direct_database_url(
    stage_secrets: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DIRECT_DATABASE_URL", SUPABASE_POOLER.format(password="hunter2", port=6543))

    exit_code = main(["migrate", "--stage", STAGE])

    assert exit_code == 1
    assert capsys.readouterr().err == f"{MIGRATIONS_NEED_A_SESSION}\n"


LEGACY_JWT_SECRET = "hunter2-legacy-jwt-secret-of-at-least-32-characters"


@pytest.fixture
def jwt_secret(aws: None) -> str:
    """The legacy JWT secret `serverless deploy` creates for a stage, holding its placeholder."""
    name = secret_name(STAGE, jwt=True)
    boto3.client("secretsmanager").create_secret(Name=name, SecretString='{"placeholder": "x"}')
    return name


def test_legacy_jwt_secret_is_stored_from_stdin_unechoed(
    jwt_secret: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{LEGACY_JWT_SECRET}\n"))

    exit_code = main(["secret", "--stage", STAGE, "--jwt"])

    value = boto3.client("secretsmanager").get_secret_value(SecretId=jwt_secret)["SecretString"]
    output = capsys.readouterr()
    assert exit_code == 0
    assert jwt_secret == f"serverless-python-postgres/{STAGE}/supabase-jwt-secret"
    assert value == LEGACY_JWT_SECRET
    assert output.out == f"stored in {jwt_secret}\n"
    assert "hunter2" not in output.out + output.err


@pytest.mark.parametrize(
    "value", ["hunter2-too-short", '{"hunter2": "a JSON object, not a secret"}']
)
def test_what_cannot_be_a_jwt_secret_is_refused_unechoed(
    jwt_secret: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    value: str,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{value}\n"))

    exit_code = main(["secret", "--stage", STAGE, "--jwt"])

    stored_value = boto3.client("secretsmanager").get_secret_value(SecretId=jwt_secret)
    assert exit_code == 1
    assert stored_value["SecretString"] == '{"placeholder": "x"}'
    assert "hunter2" not in "".join(capsys.readouterr())
