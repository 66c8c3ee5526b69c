"""Which database URL serves which purpose, decided here and nowhere else.

- The functions reach Postgres through the transaction pooler (`DATABASE_URL`; deployed, the
  stage's secret): Supavisor on port 6543, PgBouncer `pool_mode=transaction`, Neon's `-pooler`
  host, RDS Proxy.
- Migrations need a real session (DDL, advisory locks, long transactions): a session-mode or
  direct URL (`DIRECT_DATABASE_URL`, or a `DATABASE_URL` that is not in transaction mode),
  never the transaction pooler.

`url_for` is what `make migrate` (infra/migrate.py), `make secret` and `make migrate STAGE=...`
(infra/stage.py) and Alembic's env.py, online or with `--sql`, all call. It reads the settings
as the functions do (environment variables, then `.env`) and refuses with a fixed message that
never quotes the URL, which holds the password.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import URL
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from shared._errors import DatabaseConfigError
from shared._settings import ConnectionMode, Settings, get_settings

SUPAVISOR_TRANSACTION_PORT = 6543

UNPARSEABLE = (
    "The database URL cannot be parsed: URL-escape the password "
    "(@ -> %40, : -> %3A, / -> %2F, # -> %23, ? -> %3F, % -> %25) and check the port"
)
NOT_POSTGRES = "The database URL must start with postgres:// or postgresql://"
MIGRATIONS_NEED_A_SESSION = (
    "Migrations need a session-mode (port 5432) or direct database URL, never the transaction "
    "pooler: set DIRECT_DATABASE_URL (for a stage: make secret STAGE=<stage> SECRET=direct)"
)
FUNCTIONS_NEED_THE_POOLER = (
    "The functions need the transaction-pooler URL (Supabase: port 6543); session-mode and "
    "direct URLs are for migrations (SECRET=direct)"
)
NO_URL: dict[str, str] = {
    "functions": "No database URL: set DATABASE_URL (deployed: DATABASE_SECRET_ARN)",
    "migrations": "No database URL for migrations: set DIRECT_DATABASE_URL",
}


class Purpose(StrEnum):
    """What a URL is for."""

    FUNCTIONS = "functions"  # the transaction pooler, through NullPool
    MIGRATIONS = "migrations"  # a session-mode or direct URL


def to_sqlalchemy_url(raw: str) -> URL:
    """Accept a URL as Supabase's dashboard prints it and select the psycopg 3 driver.

    Every way a URL can be malformed (an unescaped `@` in the password, a port that is not a
    number) is a DatabaseConfigError whose message never quotes the URL.
    """
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        # SQLAlchemy's message quotes the string, password included.
        raise DatabaseConfigError(UNPARSEABLE) from None
    if url.get_backend_name() not in ("postgres", "postgresql"):
        raise DatabaseConfigError(NOT_POSTGRES)
    # An unescaped `@` or `/` in the password parses without error, into the wrong host.
    host, database = url.host or "", url.database or ""
    port_valid = url.port is None or 1 <= url.port <= 65535
    if "@" in host or "/" in host or "@" in database or not port_valid:
        raise DatabaseConfigError(UNPARSEABLE)
    return url.set(drivername="postgresql+psycopg")


def detect_mode(url: URL) -> ConnectionMode:
    """Guess the connection mode from the host and port; transaction mode when unsure."""
    host = (url.host or "").lower()
    port = url.port or 5432
    if host.endswith(".pooler.supabase.com"):
        return (
            ConnectionMode.TRANSACTION
            if port == SUPAVISOR_TRANSACTION_PORT
            else ConnectionMode.SESSION
        )
    if host.startswith("db.") and host.endswith(".supabase.co"):
        return ConnectionMode.DIRECT
    # Transaction mode is safe against every server, so it is the default guess.
    return ConnectionMode.TRANSACTION


def _is_transaction_pooler(url: URL) -> bool:
    """What a URL shows for certain: Supavisor's transaction port, Neon's pooled host."""
    return url.port == SUPAVISOR_TRANSACTION_PORT or "-pooler." in (url.host or "").lower()


def _configured(purpose: Purpose, settings: Settings) -> tuple[str, ConnectionMode]:
    """The URL the settings name for `purpose`, and the mode it claims."""
    if purpose is Purpose.MIGRATIONS and settings.direct_database_url is not None:
        return settings.direct_database_url.get_secret_value(), ConnectionMode.DIRECT
    if settings.database_url is None:
        raise DatabaseConfigError(NO_URL[purpose])
    return settings.database_url.get_secret_value(), settings.db_mode


def url_for(
    purpose: Purpose, url: str | URL | None = None, settings: Settings | None = None
) -> URL:
    """The URL that serves `purpose`: `url` when given, else the one the settings name for it.

    For the functions: DATABASE_URL, in transaction mode. For migrations: DIRECT_DATABASE_URL,
    else DATABASE_URL when DB_MODE (or the URL itself) says it is not in transaction mode; a
    URL that shows a transaction pooler (port 6543, a `-pooler.` host) is refused either way.
    """
    if url is None:
        url, mode = _configured(purpose, settings or get_settings())
    else:
        # A URL given for migrations is what it claims to be, unless it shows a pooler.
        mode = ConnectionMode.DIRECT if purpose is Purpose.MIGRATIONS else ConnectionMode.AUTO
    parsed = to_sqlalchemy_url(url) if isinstance(url, str) else url
    if mode is ConnectionMode.AUTO:
        mode = detect_mode(parsed)
    if purpose is Purpose.FUNCTIONS and mode is not ConnectionMode.TRANSACTION:
        raise DatabaseConfigError(FUNCTIONS_NEED_THE_POOLER)
    if purpose is Purpose.MIGRATIONS and (
        mode is ConnectionMode.TRANSACTION or _is_transaction_pooler(parsed)
    ):
        raise DatabaseConfigError(MIGRATIONS_NEED_A_SESSION)
    return parsed
