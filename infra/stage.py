"""Deployed stages: store a database URL (or the legacy JWT secret) in the stage's secret,
run migrations over the session-mode or direct URL.

    python -m infra.stage secret --stage dev            # transaction-pooler URL, from stdin
    python -m infra.stage secret --stage dev --direct   # session-mode/direct URL, for migrations
    python -m infra.stage secret --stage dev --jwt      # Supabase's legacy JWT secret (HS256)
    python -m infra.stage migrate --stage dev           # DIRECT_DATABASE_URL, else that secret

The secrets themselves are created by the stack (infra/cloudformation/database-secrets.yml,
auth-secrets.yml), so `serverless deploy` must have run once. Values are read from stdin (a
prompt that does not echo on a terminal), never from arguments that would land in shell
history.

Which URL may serve which purpose is decided by `shared.database_url.url_for`, as for every
other path. `migrate` reads DIRECT_DATABASE_URL from the environment only, never from `.env`:
`.env` describes the machine's own database, not the stage's.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import TYPE_CHECKING

import boto3
from alembic.util import CommandError

from infra.migrate import describe, upgrade
from infra.package import read_service
from shared.database_url import Purpose, url_for
from shared.errors import DatabaseConfigError, DatabaseSecretNotSetError
from shared.secrets import parse_secret

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient


class StageError(Exception):
    """A stage command cannot go on; the message says what to do."""


MIN_JWT_SECRET_LENGTH = 32
"""Supabase refuses shorter JWT secrets."""


def secret_name(stage: str, *, direct: bool = False, jwt: bool = False) -> str:
    """The name the stack gives a stage's secret."""
    kind = "supabase-jwt-secret" if jwt else "direct-database-url" if direct else "database-url"
    return f"{read_service().name}/{stage}/{kind}"


def _client() -> SecretsManagerClient:
    return boto3.client("secretsmanager")


def check_url(url: str, *, direct: bool) -> None:
    """Refuse a URL recognisably wrong for its purpose, without ever echoing it."""
    try:
        url_for(Purpose.MIGRATIONS if direct else Purpose.FUNCTIONS, url)
    except DatabaseConfigError as error:
        raise StageError(str(error)) from None


def _store(stage: str, name: str, value: str) -> str:
    client = _client()
    try:
        client.put_secret_value(SecretId=name, SecretString=value)
    except client.exceptions.ResourceNotFoundException:
        raise StageError(
            f"Secret {name} does not exist: run `make deploy STAGE={stage}` first"
        ) from None
    return name


def put_secret(stage: str, url: str, *, direct: bool) -> str:
    """Store the URL as the secret's current value; return the secret's name."""
    check_url(url, direct=direct)
    return _store(stage, secret_name(stage, direct=direct), url)


def put_jwt_secret(stage: str, jwt_secret: str) -> str:
    """Store Supabase's legacy JWT secret (Settings > JWT Keys) for the functions to verify
    HS256 tokens with; return the secret's name."""
    if len(jwt_secret) < MIN_JWT_SECRET_LENGTH or jwt_secret.startswith("{"):
        raise StageError(
            f"That is not a JWT secret: Supabase's has at least {MIN_JWT_SECRET_LENGTH} characters"
        )
    return _store(stage, secret_name(stage, jwt=True), jwt_secret)


def migration_url(stage: str) -> str:
    """DIRECT_DATABASE_URL when set, else the stage's direct-URL secret."""
    explicit = os.environ.get("DIRECT_DATABASE_URL")
    if explicit:
        return explicit
    name = secret_name(stage, direct=True)
    client = _client()
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


def migrate(stage: str) -> None:
    """Upgrade the stage's database to the latest migration, naming it first."""
    url = url_for(Purpose.MIGRATIONS, migration_url(stage))
    sys.stderr.write(f"migrate: upgrading the {describe(url)} ({stage}) to the latest migration\n")
    upgrade(url)


def _read_hidden(prompt: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(prompt).strip()
    return sys.stdin.readline().strip()


def main(argv: list[str] | None = None) -> int:
    """The command line; errors are one line on stderr and exit code 1."""
    parser = argparse.ArgumentParser(prog="python -m infra.stage", description=__doc__)
    parser.add_argument("command", choices=["secret", "migrate"])
    parser.add_argument("--stage", required=True)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--direct", action="store_true", help="the migrations' URL")
    which.add_argument("--jwt", action="store_true", help="Supabase's legacy JWT secret")
    args = parser.parse_args(argv)
    try:
        if args.command == "secret" and args.jwt:
            name = put_jwt_secret(args.stage, _read_hidden("Supabase legacy JWT secret: "))
            sys.stdout.write(f"stored in {name}\n")
        elif args.command == "secret":
            kind = "session-mode or direct" if args.direct else "transaction-pooler (port 6543)"
            name = put_secret(args.stage, _read_hidden(f"{kind} URL: "), direct=args.direct)
            sys.stdout.write(f"stored in {name}\n")
        else:
            migrate(args.stage)
    except (StageError, DatabaseConfigError, CommandError) as error:
        sys.stderr.write(f"{error}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
