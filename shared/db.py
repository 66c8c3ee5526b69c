"""The database engine: safe behind a transaction-mode pooler, lean on Lambda.

Transaction mode (the default: Supavisor on port 6543, PgBouncer `pool_mode=transaction`,
Neon's `-pooler` host, RDS Proxy) hands each *transaction* to whichever server connection is
free, so nothing may outlive a transaction:

- `NullPool`: each request opens one connection to the pooler and closes it. The pooler, not
  the process, keeps server connections warm, and a frozen Lambda never holds a slot.
  https://supabase.com/docs/guides/database/connecting-to-postgres#supavisor-transaction-mode
- `prepare_threshold=None`, always: psycopg prepares a statement on its 6th run and names it
  `_pg3_0`, `_pg3_1`, ... on every connection, so two clients that land on one server
  connection collide: `prepared statement "_pg3_0" already exists`, `does not exist`, or,
  worst, client B silently runs client A's statement and gets A's rows. NullPool alone does
  not help: the statement stays on the server connection.
  https://www.psycopg.org/psycopg3/docs/advanced/prepare.html#using-prepared-statements-with-pgbouncer
- No startup `options` (PgBouncer rejects them, others drop them) and no plain `SET` (it leaks
  to the next client of that server connection): `statement_timeout` is set with `SET LOCAL`
  at the start of every transaction. Single-statement reads run in autocommit (one round trip
  instead of BEGIN, SELECT, COMMIT) and are bounded by the role's own `statement_timeout`.
- `connect_timeout` well under the Lambda timeout, so an outage answers 503 quickly.
- `application_name` per function, so `pg_stat_activity` shows who holds connections.
- `sslmode=require` for any non-loopback host unless the URL says otherwise; `sslrootcert`
  for `verify-full`. Loopback gets `disable`, saving the round trip of `prefer`.
- `client_encoding=utf8`, as Supabase's SQLAlchemy guide sets it.

What does not work through a transaction-mode pooler (use the session-mode or direct URL):
LISTEN/NOTIFY, session-level advisory locks (`pg_advisory_lock`; the `_xact_` variants are
fine), plain `SET`/`RESET`, temporary tables used across transactions, `WITH HOLD` cursors,
and named prepared statements (`PREPARE`, or a driver's automatic ones).
https://www.pgbouncer.org/features.html#sql-feature-map-for-pooling-modes

Session mode and direct connections (stationary servers, migrations) get a `QueuePool` sized
by `pool_size_per_instance` with pre-ping; prepared statements stay on there, where they are
safe. ORM sessions live in `shared.sessions`, so handlers that only need a connection do not
pay for importing the ORM at cold start.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache, partial
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, event
from sqlalchemy.pool import NullPool

from shared.database_url import detect_mode, to_sqlalchemy_url
from shared.errors import DatabaseConfigError
from shared.secrets import fetch_database_url
from shared.settings import ConnectionMode, Settings, get_settings

__all__ = [
    "autocommit_connection",
    "build_engine",
    "detect_mode",
    "get_engine",
    "pool_size_per_instance",
    "to_sqlalchemy_url",
    "transaction",
]

logger = logging.getLogger(__name__)

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
# What poolers and Postgres say to a wrong password; libpq gives no SQLSTATE at connect time.
AUTH_FAILURE = re.compile(r"authentication failed|password", re.IGNORECASE)


def pool_size_per_instance(max_connections: int, instances: int, *, uses_data_api: bool) -> int:
    """Supabase's rule of thumb: 40% of max_connections with the Data API, 80% without."""
    budget_percent = 40 if uses_data_api else 80
    return max(1, max_connections * budget_percent // 100 // instances)


def _connect_args(url: URL, mode: ConnectionMode, settings: Settings) -> dict[str, Any]:
    args: dict[str, Any] = {
        "client_encoding": "utf8",
        "connect_timeout": settings.db_connect_timeout,
        "application_name": settings.db_application_name,
    }
    if mode is ConnectionMode.TRANSACTION:
        # connect_args override the URL's query, so no URL can turn preparation back on.
        args["prepare_threshold"] = None
    if "sslmode" not in url.query:
        loopback = url.host is None or url.host in LOOPBACK_HOSTS
        args["sslmode"] = settings.db_sslmode or ("disable" if loopback else "require")
    if settings.db_sslrootcert is not None:
        args["sslrootcert"] = str(settings.db_sslrootcert)
    return args


def _set_statement_timeout(timeout_ms: int, conn: Connection) -> None:
    """Bound every transaction without leaking a session setting to the next pooler client."""
    if getattr(conn.connection.driver_connection, "autocommit", False):
        return  # SET LOCAL outside a transaction does nothing but cost a round trip
    conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout_ms)}")


def build_engine(
    url: URL | str, settings: Settings, mode: ConnectionMode = ConnectionMode.AUTO
) -> Engine:
    """Build the engine for a URL in the given (or detected) connection mode."""
    url = to_sqlalchemy_url(url) if isinstance(url, str) else url
    if mode is ConnectionMode.AUTO:
        mode = detect_mode(url)
    common: dict[str, Any] = {
        "connect_args": _connect_args(url, mode, settings),
        "hide_parameters": True,  # error messages never quote row values
    }
    if mode is ConnectionMode.TRANSACTION:
        engine = create_engine(url, poolclass=NullPool, **common)
    else:
        pool_size = settings.db_pool_size or pool_size_per_instance(
            settings.db_max_connections,
            settings.db_instances,
            uses_data_api=settings.db_uses_data_api,
        )
        engine = create_engine(
            url,
            pool_size=pool_size,
            max_overflow=settings.db_max_overflow,
            pool_pre_ping=True,  # a stationary server outlives idle connections
            pool_recycle=1800,
            **common,
        )
    if settings.db_statement_timeout_ms:
        timeout_ms = settings.db_statement_timeout_ms
        event.listen(engine, "begin", lambda conn: _set_statement_timeout(timeout_ms, conn))
    logger.info(
        "database engine built",
        extra={"mode": mode.value, "host": url.host, "port": url.port, "database": url.database},
    )
    return engine


def _connect_refreshing_secret(
    secret_arn: str,
    refreshed: dict[str, Any],
    dialect: Any,
    _record: Any,
    cargs: Any,
    cparams: dict[str, Any],
) -> Any:
    """Connect; after a failed login, re-read the secret once and retry with its credentials.

    A rotated password then costs one extra secret read, not a failed request. The fresh
    credentials are kept in `refreshed` and used by every later connection of the process.
    """
    cparams.update(refreshed)
    try:
        return dialect.connect(*cargs, **cparams)
    except dialect.loaded_dbapi.OperationalError as exc:
        if not AUTH_FAILURE.search(str(exc)):
            raise
    fresh = to_sqlalchemy_url(fetch_database_url(secret_arn))
    refreshed.update(user=fresh.username, password=fresh.password)
    cparams.update(refreshed)
    logger.info("database credentials refreshed from the secret after a failed login")
    return dialect.connect(*cargs, **cparams)


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    """The process's one engine, built on first use and reused by warm invocations."""
    settings = get_settings()
    if settings.database_url is not None:
        return build_engine(settings.database_url.get_secret_value(), settings, settings.db_mode)
    if settings.database_secret_arn is not None:
        secret_arn = settings.database_secret_arn
        engine = build_engine(fetch_database_url(secret_arn), settings, settings.db_mode)
        event.listen(engine, "do_connect", partial(_connect_refreshing_secret, secret_arn, {}))
        return engine
    raise DatabaseConfigError("Set DATABASE_URL (or DATABASE_SECRET_ARN when deployed)")


@contextmanager
def transaction() -> Iterator[Connection]:
    """One connection and one transaction: committed on success, rolled back on error."""
    with get_engine().begin() as conn:
        yield conn


@contextmanager
def autocommit_connection() -> Iterator[Connection]:
    """One connection without BEGIN/COMMIT, for a single read statement."""
    with get_engine().connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")
