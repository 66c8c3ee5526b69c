"""Runtime configuration, read once from the environment and a local `.env`.

Environment variables win over `.env`. `.env` is the one in the working directory (the
repository root for every `make` command), or the file SETTINGS_ENV_FILE names; an empty
SETTINGS_ENV_FILE reads none, which the test session uses so that a developer's `.env` cannot
change what the tests see.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
"""Hosts that are this machine: the local stack, where plain http and libpq's `prefer` are fine."""


class ConnectionMode(StrEnum):
    """How the database is reached; decides the pool and whether statements may be prepared."""

    AUTO = "auto"
    TRANSACTION = "transaction"  # Supavisor :6543, PgBouncer pool_mode=transaction, Neon, RDS Proxy
    SESSION = "session"  # Supavisor :5432: one server connection per client connection
    DIRECT = "direct"  # db.<ref>.supabase.co:5432: Postgres itself


def _default_application_name() -> str:
    """Name connections after the Lambda function so `pg_stat_activity` tells them apart."""
    return os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "local")


ENV_FILE_VARIABLE = "SETTINGS_ENV_FILE"


class Settings(BaseSettings):
    """Every knob the functions read, from the environment (`get_settings` adds `.env`)."""

    model_config = SettingsConfigDict(extra="ignore")

    database_url: SecretStr | None = None
    """The pooler URL (transaction mode) exactly as the Supabase dashboard gives it."""

    database_secret_arn: str | None = None
    """Deployed: the Secrets Manager secret holding that URL, read at runtime on first use."""

    direct_database_url: SecretStr | None = None
    """Session-mode or direct URL, for migrations; never the transaction pooler."""

    db_mode: ConnectionMode = ConnectionMode.AUTO
    db_connect_timeout: int = Field(default=3, ge=2, le=30)
    """Seconds; libpq's minimum is 2. Well under the Lambda timeout so outages answer 503 fast."""

    db_statement_timeout_ms: int = Field(default=5_000, ge=0)
    """Per transaction (reads included), set in the exchange of its first statement; 0 leaves
    the role's default in force. Never more than what is left of the request's deadline."""

    request_timeout_s: float = Field(default=9.0, gt=0)
    """The request deadline where no Lambda context tells the remaining time (local servers)."""

    db_sslmode: str | None = None
    """Overrides the default: `verify-full` for Supabase's hosts, `prefer` on loopback,
    `require` elsewhere. A `sslmode` in the URL wins over both."""

    db_sslrootcert: Path | None = None
    """CA file for `verify-full`; Supabase's root CA ships with `shared` and needs none."""

    db_application_name: str = Field(default_factory=_default_application_name)

    db_keep_connection: bool = False
    """Transaction mode: keep each engine's one pooler connection between invocations of a warm
    instance instead of logging in on every request (`shared._kept_connection`). Each instance
    then holds a pooler client slot while idle too."""

    db_keep_connection_max_idle_s: float = Field(default=300.0, gt=0)
    """A kept connection idle longer than this is replaced before use: under AWS NAT gateway's
    350 s idle timeout, the shortest among the network's and the poolers' defaults."""

    db_pool_size: int | None = Field(default=None, ge=1)
    """Session/direct mode only; None derives it from the connection budget below."""

    db_max_overflow: int = Field(default=0, ge=0)
    db_max_connections: int = Field(default=60, ge=1)
    """The database's max_connections (Supabase Nano/Micro: 60)."""

    db_instances: int = Field(default=1, ge=1)
    """How many stationary instances share that budget."""

    db_uses_data_api: bool = True
    """Whether Supabase's Data API (PostgREST) also needs connections: 40% budget, else 80%."""

    supabase_url: str | None = None
    """The project's URL (`https://<ref>.supabase.co`): access tokens must be issued by its
    `/auth/v1` and are verified with the keys its `/auth/v1/.well-known/jwks.json` publishes."""

    supabase_jwt_secret_arn: str | None = None
    """Deployed: the Secrets Manager secret holding the legacy JWT secret, for projects that
    still sign tokens with HS256; read on the first such token, never an environment variable."""

    auth_jwks_timeout_s: float = Field(default=2.0, gt=0, le=10)
    """Seconds to fetch the JWKS, never more than what is left of the request's deadline."""

    function_name_prefix: str = ""
    """What the Lambda function's name adds to the short name metrics use (`items`):
    serverless.yml sets `${service}-${stage}-`."""

    metrics_function_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    """The `function` dimension of the metrics, where the function's name does not give it."""

    pooler_admin_url: SecretStr | None = None
    """A PgBouncer admin console (`.../pgbouncer`) the monitor reads `SHOW POOLS` from; unset
    (Supavisor has none), no PoolerClients metric."""


def env_file(environ: Mapping[str, str] | None = None) -> Path | None:
    """`.env` in the working directory, the file SETTINGS_ENV_FILE names, or none if it is empty."""
    env = os.environ if environ is None else environ
    name = env.get(ENV_FILE_VARIABLE, ".env")
    return Path(name) if name else None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read the settings once per process; tests call `get_settings.cache_clear()`."""
    return Settings(_env_file=env_file())
