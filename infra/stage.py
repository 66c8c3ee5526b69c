"""Deployed stages: store a database URL or the legacy JWT secret in the stage's secret, run
migrations, check a stage before `serverless` runs.

    python -m infra.stage secret --stage dev            # transaction-pooler URL, from stdin
    python -m infra.stage secret --stage dev --direct   # session-mode/direct URL, for migrations
    python -m infra.stage secret --stage dev --jwt      # Supabase's legacy JWT secret (HS256)
    python -m infra.stage migrate --stage dev           # DIRECT_DATABASE_URL, else that secret
    python -m infra.stage check --stage dev --offline   # `make package`: a Supabase URL is set
    python -m infra.stage check --stage dev             # `make deploy`: and the concurrency fits

The region is the one `serverless` deploys to (infra/serverless_config.py), never the profile's.
Values come from stdin, never arguments that would land in shell history; `migrate` reads
DIRECT_DATABASE_URL from the environment only, because `.env` describes this machine's
database, not the stage's. Errors are one line.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

import boto3
from alembic.util import CommandError
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from infra.migrate import describe, upgrade
from infra.serverless_config import ConfigError, StageConfig, read_service, read_stage_config
from shared._database_url import Purpose, url_for
from shared._errors import DatabaseConfigError, DatabaseSecretNotSetError
from shared._secrets import parse_secret

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient


class StageError(Exception):
    """A stage command cannot go on; the message says what to do."""


MIN_JWT_SECRET_LENGTH = 32
"""Supabase refuses shorter JWT secrets."""

MIN_UNRESERVED_CONCURRENCY = 100
"""What Lambda keeps unreserved for the account's other functions, or the whole quota when that
is smaller (a new account's quota of 10 leaves nothing to reserve)."""

NO_CREDENTIALS = (
    "No AWS credentials: set AWS_PROFILE (after `aws sso login` or `aws configure`) or "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
)


def secret_name(stage: str, *, direct: bool = False, jwt: bool = False) -> str:
    """The name the stack gives a stage's secret."""
    kind = "supabase-jwt-secret" if jwt else "direct-database-url" if direct else "database-url"
    return f"{read_service().name}/{stage}/{kind}"


def _client(stage: str, region: str | None = None) -> SecretsManagerClient:
    """Secrets Manager in the region `serverless` deploys the stage to."""
    return boto3.client("secretsmanager", region_name=read_stage_config(stage, region).region)


def check_url(url: str, *, direct: bool) -> None:
    """Refuse a URL recognisably wrong for its purpose, without ever echoing it."""
    try:
        url_for(Purpose.MIGRATIONS if direct else Purpose.FUNCTIONS, url)
    except DatabaseConfigError as error:
        raise StageError(str(error)) from None


def _store(stage: str, name: str, value: str, region: str | None = None) -> str:
    client = _client(stage, region)
    try:
        client.put_secret_value(SecretId=name, SecretString=value)
    except client.exceptions.ResourceNotFoundException:
        raise StageError(
            f"Secret {name} does not exist: run `make deploy STAGE={stage}` first"
        ) from None
    return name


def put_secret(stage: str, url: str, *, direct: bool, region: str | None = None) -> str:
    """Store the URL as the secret's current value; return the secret's name."""
    check_url(url, direct=direct)
    return _store(stage, secret_name(stage, direct=direct), url, region)


def put_jwt_secret(stage: str, jwt_secret: str, region: str | None = None) -> str:
    """Store Supabase's legacy JWT secret (Settings > JWT Keys) for the functions to verify
    HS256 tokens with; return the secret's name."""
    if len(jwt_secret) < MIN_JWT_SECRET_LENGTH or jwt_secret.startswith("{"):
        raise StageError(
            f"That is not a JWT secret: Supabase's has at least {MIN_JWT_SECRET_LENGTH} characters"
        )
    return _store(stage, secret_name(stage, jwt=True), jwt_secret, region)


def migration_url(stage: str, region: str | None = None) -> str:
    """DIRECT_DATABASE_URL when set, else the stage's direct-URL secret."""
    explicit = os.environ.get("DIRECT_DATABASE_URL")
    if explicit:
        return explicit
    name = secret_name(stage, direct=True)
    client = _client(stage, region)
    try:
        value = client.get_secret_value(SecretId=name)["SecretString"]
    except client.exceptions.ResourceNotFoundException:
        raise StageError(
            f"Secret {name} does not exist: run `make deploy STAGE={stage}` first"
        ) from None
    try:
        url = parse_secret(value)
    except (DatabaseConfigError, DatabaseSecretNotSetError):
        raise StageError(
            f"Secret {name} holds no URL yet: run `make secret STAGE={stage} SECRET=direct`"
        ) from None
    check_url(url, direct=True)
    return url


def migrate(stage: str, region: str | None = None) -> None:
    """Upgrade the stage's database to the latest migration, naming it first."""
    url = url_for(Purpose.MIGRATIONS, migration_url(stage, region))
    sys.stderr.write(f"migrate: upgrading the {describe(url)} ({stage}) to the latest migration\n")
    upgrade(url)


def check_supabase_url(config: StageConfig) -> None:
    """Refuse a stage whose functions would answer every authenticated request with a 500."""
    if not config.supabase_url:
        raise StageError(
            f"supabaseUrl is empty for stage {config.stage}: set SUPABASE_URL="
            f"https://<ref>.supabase.co (or params.{config.stage}.supabaseUrl in serverless.yml)"
        )


class LambdaConcurrency(Protocol):
    """The two Lambda calls the concurrency check makes (the project has no Lambda stubs)."""

    def get_account_settings(self) -> Mapping[str, Any]: ...

    def get_function_concurrency(self, *, FunctionName: str) -> Mapping[str, Any]: ...


def _reserved_now(client: LambdaConcurrency, function_name: str) -> int:
    """The function's reserved concurrency in AWS today; 0 when it is not deployed."""
    try:
        answer = client.get_function_concurrency(FunctionName=function_name)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return 0
        raise
    return int(answer.get("ReservedConcurrentExecutions", 0))


def check_concurrency(config: StageConfig) -> int:
    """Refuse a stage whose reserved concurrency the account cannot grant; return what it
    could reserve. What this stack's functions reserve today is given back on redeploy."""
    client = cast(LambdaConcurrency, boto3.client("lambda", region_name=config.region))
    limits = client.get_account_settings()["AccountLimit"]
    quota = int(limits.get("ConcurrentExecutions", 0))
    unreserved = int(limits.get("UnreservedConcurrentExecutions", 0))
    kept = min(MIN_UNRESERVED_CONCURRENCY, quota)
    ours = sum(_reserved_now(client, name) for name in config.function_names.values())
    available = max(unreserved + ours - kept, 0)
    wanted = config.total_reserved_concurrency
    if wanted > available:
        raise StageError(
            f"stage {config.stage} reserves {wanted} concurrent executions but the account can "
            f"reserve {available} in {config.region} (quota {quota}, {kept} kept unreserved): "
            "lower the *Concurrency params in serverless.yml to fit, or raise the quota "
            '(Service Quotas, Lambda "Concurrent executions")'
        )
    return available


def check(stage: str, region: str | None = None, *, offline: bool = False) -> str:
    """The checks before `serverless package` (offline) or `deploy`; return what was checked."""
    config = read_stage_config(stage, region)
    check_supabase_url(config)
    checked = f"stage {stage}: SUPABASE_URL {config.supabase_url}"
    if offline:
        return checked
    available = check_concurrency(config)
    return (
        f"{checked}; reserved concurrency {config.total_reserved_concurrency} of "
        f"{available} available in {config.region}"
    )


def _read_hidden(prompt: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(prompt).strip()
    return sys.stdin.readline().strip()


def main(argv: list[str] | None = None) -> int:
    """The command line; errors are one line on stderr and exit code 1."""
    parser = argparse.ArgumentParser(prog="python -m infra.stage", description=__doc__)
    parser.add_argument("command", choices=["secret", "migrate", "check"])
    parser.add_argument("--stage", required=True)
    parser.add_argument("--region", help="as given to `serverless` (default: serverless.yml's)")
    parser.add_argument("--offline", action="store_true", help="check: only what needs no AWS")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--direct", action="store_true", help="the migrations' URL")
    which.add_argument("--jwt", action="store_true", help="Supabase's legacy JWT secret")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            sys.stdout.write(f"{check(args.stage, args.region, offline=args.offline)}\n")
        elif args.command == "secret" and args.jwt:
            secret = _read_hidden("Supabase legacy JWT secret: ")
            name = put_jwt_secret(args.stage, secret, args.region)
            sys.stdout.write(f"stored in {name}\n")
        elif args.command == "secret":
            kind = "session-mode or direct" if args.direct else "transaction-pooler (port 6543)"
            url = _read_hidden(f"{kind} URL: ")
            name = put_secret(args.stage, url, direct=args.direct, region=args.region)
            sys.stdout.write(f"stored in {name}\n")
        else:
            migrate(args.stage, args.region)
    except NoCredentialsError:
        sys.stderr.write(f"{NO_CREDENTIALS}\n")
        return 1
    except (BotoCoreError, ClientError) as error:
        sys.stderr.write(f"AWS: {error}\n")
        return 1
    except (StageError, ConfigError, DatabaseConfigError, CommandError) as error:
        sys.stderr.write(f"{error}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
