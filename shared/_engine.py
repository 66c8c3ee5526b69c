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
  not help: the statement stays on the server connection. PgBouncer >= 1.21 with
  `max_prepared_statements > 0` (the default from 1.24) and libpq >= 17 can carry psycopg's
  prepared statements, but Supavisor's support is opt-in and off on Supabase, and RDS Proxy
  pins the session on them, so they stay off in transaction mode.
  https://www.psycopg.org/psycopg3/docs/advanced/prepare.html#using-prepared-statements-with-pgbouncer
- No startup `options` (PgBouncer rejects them, others drop them) and no plain `SET` or `SET
  ROLE` (they leak to the next client of that server connection): every transaction, single
  reads in autocommit included, sets `statement_timeout` and the role and JWT claims it acts
  with (`anon` unless a verified caller is in scope: `shared._identity`) transaction-locally,
  in the same exchange as its first statement (`shared._driver`), never longer than what is
  left of the invocation's deadline (`shared._deadline`). A read is one exchange with the
  pooler, a write two.
- `connect_timeout` well under the Lambda timeout and within the deadline, so an outage
  answers 503 quickly; a connection still waiting when the deadline passes is cut.
- `application_name` per function, so `pg_stat_activity` shows who holds connections.
- The server verified wherever its CA is known: Supabase's hosts (`*.supabase.com`, the
  pooler; `*.supabase.co`, direct) get `verify-full` against Supabase's public root CA, which
  ships in `shared/certs/` (the same for every project; the dashboard's "Download
  certificate" hands out this file). Other hosts get `require` (encrypted, server unverified),
  loopback libpq's own `prefer`. The URL's `sslmode`, then DB_SSLMODE, win over these;
  DB_SSLROOTCERT (or the URL's `sslrootcert`) names another CA file.
  https://supabase.com/docs/guides/platform/ssl-enforcement
- `client_encoding=utf8`, as Supabase's SQLAlchemy guide sets it.

What does not work through a transaction-mode pooler (use the session-mode or direct URL):
LISTEN/NOTIFY, session-level advisory locks (`pg_advisory_lock`; the `_xact_` variants are
fine), plain `SET`/`RESET`, temporary tables used across transactions, `WITH HOLD` cursors,
and named prepared statements (`PREPARE`, or a driver's automatic ones).
https://www.pgbouncer.org/features.html#sql-feature-map-for-pooling-modes

Session mode and direct connections (stationary servers, migrations) get a `QueuePool` sized
by `pool_size_per_instance` with pre-ping; prepared statements stay on there, where they are
safe. ORM sessions live in `shared._sessions` (and `shared._sessions` for FastAPI's
`async def` routes, over `get_async_engine()`), so handlers that only need a connection do not
pay for importing the ORM at cold start.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import URL, Connection, Engine, create_engine, event
from sqlalchemy.pool import NullPool

from shared._database_url import NO_URL, Purpose, detect_mode, to_sqlalchemy_url
from shared._deadline import DeadlineExceededError, remaining_seconds, watch
from shared._driver import AsyncPoolerConnection, PoolerConnection
from shared._errors import DatabaseConfigError
from shared._secrets import DatabaseSecret
from shared._settings import ConnectionMode, Settings, get_settings

if TYPE_CHECKING:  # the asyncio extension needs greenlet, which only FastAPI functions ship
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "autocommit_connection",
    "build_engine",
    "forget_engines",
    "get_async_engine",
    "get_engine",
    "pool_size_per_instance",
    "transaction",
]

logger = logging.getLogger(__name__)


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
SUPABASE_DOMAINS = (".supabase.com", ".supabase.co")
SUPABASE_ROOT_CA = Path(__file__).parent / "certs" / "supabase-root-2021-ca.pem"
"""Supabase Root 2021 CA (valid until 2031-04-26), which its pooler and databases chain to."""
VERIFYING_MODES = frozenset({"verify-ca", "verify-full"})
TLS_PARAMETERS = ("sslmode", "sslrootcert")
MIN_CONNECT_TIMEOUT_S = 2
"""libpq's (and psycopg's) smallest connect timeout: a shorter one is taken as 2 s."""
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
    return args | _tls_args(url, settings)


def _tls_args(url: URL, settings: Settings) -> dict[str, str]:
    """`sslmode` and `sslrootcert` where the URL leaves them out (see the module docstring)."""
    host = (url.host or "").lower()
    supabase = host.endswith(SUPABASE_DOMAINS)
    args: dict[str, str] = {}
    if "sslmode" not in url.query:
        loopback = not host or host in LOOPBACK_HOSTS
        default = "verify-full" if supabase else "prefer" if loopback else "require"
        args["sslmode"] = settings.db_sslmode or default
    if settings.db_sslrootcert is not None:
        args["sslrootcert"] = str(settings.db_sslrootcert)
    elif supabase and "sslrootcert" not in url.query:
        mode = url.query.get("sslmode", args.get("sslmode"))
        if mode in VERIFYING_MODES:
            args["sslrootcert"] = str(SUPABASE_ROOT_CA)
    return args


def _open(timeout_ms: int, dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> Any:
    """Open a connection with the pipelining driver classes, within the invocation's deadline."""
    left = remaining_seconds()
    if left is not None:
        if left < MIN_CONNECT_TIMEOUT_S:
            raise DeadlineExceededError  # a connect attempt could outlast the deadline
        cparams["connect_timeout"] = min(int(cparams["connect_timeout"]), int(left))
    if dialect.is_async:
        opener = partial(AsyncPoolerConnection.open, timeout_ms)
        return dialect.connect(async_creator_fn=opener, **cparams)
    return PoolerConnection.open(timeout_ms, **cparams)


def _watch_until_deadline(_dbapi_conn: Any, record: Any, _proxy: Any) -> None:
    """A connection checked out inside an invocation is cut when its deadline passes."""
    watched = watch(record.driver_connection.pgconn.socket)
    if watched is not None:
        record.info["deadline_watch"] = watched


def _stop_watching(_dbapi_conn: Any, record: Any) -> None:
    watched = record.info.pop("deadline_watch", None)
    if watched is not None:
        watched.cancel()


def _engine_options(url: URL, settings: Settings, mode: ConnectionMode) -> dict[str, Any]:
    """What `create_engine` and `create_async_engine` get alike."""
    options: dict[str, Any] = {
        "connect_args": _connect_args(url, mode, settings),
        "hide_parameters": True,  # error messages never quote row values
    }
    if mode is ConnectionMode.TRANSACTION:
        options["poolclass"] = NullPool
    else:
        options["pool_size"] = settings.db_pool_size or pool_size_per_instance(
            settings.db_max_connections,
            settings.db_instances,
            uses_data_api=settings.db_uses_data_api,
        )
        options["max_overflow"] = settings.db_max_overflow
        options["pool_pre_ping"] = True  # a stationary server outlives idle connections
        options["pool_recycle"] = 1800
    return options


def _install(
    engine: Engine,
    url: URL,
    mode: ConnectionMode,
    settings: Settings,
    secret: DatabaseSecret | None,
) -> None:
    """Connect through the driver classes; watch checked-out connections against the deadline."""
    timeout_ms = settings.db_statement_timeout_ms
    if secret is None:
        event.listen(engine, "do_connect", partial(_open, timeout_ms))
    else:
        refresh = partial(_connect_refreshing_secret, secret, settings)
        event.listen(engine, "do_connect", refresh)
    event.listen(engine, "checkout", _watch_until_deadline)
    event.listen(engine, "checkin", _stop_watching)
    event.listen(engine, "close", _stop_watching)
    logger.info(
        "database engine built",
        extra={"mode": mode.value, "host": url.host, "port": url.port, "database": url.database},
    )


def _resolve(url: URL | str, mode: ConnectionMode) -> tuple[URL, ConnectionMode]:
    url = to_sqlalchemy_url(url) if isinstance(url, str) else url
    return url, detect_mode(url) if mode is ConnectionMode.AUTO else mode


def build_engine(
    url: URL | str,
    settings: Settings,
    mode: ConnectionMode = ConnectionMode.AUTO,
    *,
    secret: DatabaseSecret | None = None,
) -> Engine:
    """Build the engine for a URL in the given (or detected) connection mode.

    With `secret`, the URL came from that secret and is re-read after a failed login.
    """
    url, mode = _resolve(url, mode)
    engine = create_engine(url, **_engine_options(url, settings, mode))
    _install(engine, url, mode, settings, secret)
    return engine


def _connect_refreshing_secret(
    secret: DatabaseSecret,
    settings: Settings,
    dialect: Any,
    record: Any,
    cargs: Any,
    cparams: dict[str, Any],
) -> Any:
    """Connect with the secret's URL; after a failed login, retry once if the secret changed.

    A rotated password then costs no failed request, and a new host, port or database needs no
    cold start: the whole URL comes from the secret. `DatabaseSecret` bounds the re-reads.
    """
    timeout_ms = settings.db_statement_timeout_ms
    url = secret.url()
    cparams.update(_url_params(url, settings))
    try:
        return _open(timeout_ms, dialect, record, cargs, cparams)
    except dialect.loaded_dbapi.OperationalError as exc:
        fresh = secret.refresh(url) if AUTH_FAILURE.search(str(exc)) else None
        if fresh is None:
            raise
    cparams.update(_url_params(fresh, settings))
    logger.info("database credentials refreshed from the secret after a failed login")
    return _open(timeout_ms, dialect, record, cargs, cparams)


@lru_cache(maxsize=1)
def _configured_url() -> tuple[str, DatabaseSecret | None]:
    """DATABASE_URL, or the deployed secret's URL and the secret, shared by both engines."""
    settings = get_settings()
    if settings.database_url is not None:
        return settings.database_url.get_secret_value(), None
    if settings.database_secret_arn is not None:
        secret = DatabaseSecret(settings.database_secret_arn)
        return secret.url(), secret
    raise DatabaseConfigError(NO_URL[Purpose.FUNCTIONS])


def _url_params(url: str, settings: Settings) -> dict[str, Any]:
    """libpq's host, port, dbname, user and password from a URL, all of them (None for unset),
    and its TLS settings: a secret that moves the database elsewhere takes them along."""
    parsed = to_sqlalchemy_url(url)
    params = dict.fromkeys(("host", "port", "dbname", "user", "password", *TLS_PARAMETERS))
    params.update(parsed.translate_connect_args(username="user", database="dbname"))
    params.update({key: parsed.query[key] for key in TLS_PARAMETERS if key in parsed.query})
    return params | _tls_args(parsed, settings)


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    """The process's one engine, built on first use and reused by warm invocations."""
    url, secret = _configured_url()
    settings = get_settings()
    return build_engine(url, settings, settings.db_mode, secret=secret)


@lru_cache(maxsize=1)
def get_async_engine() -> AsyncEngine:
    """The process's one asyncio engine, over the same connection rules, for `async def`
    routes; built on first use."""
    from sqlalchemy.ext.asyncio import create_async_engine

    configured, secret = _configured_url()
    settings = get_settings()
    url, mode = _resolve(configured, settings.db_mode)
    engine = create_async_engine(url, **_engine_options(url, settings, mode))
    _install(engine.sync_engine, url, mode, settings, secret)
    return engine


def forget_engines() -> None:
    """Drop the engines and the secret's URL, as a new instance would (tests, SnapStart)."""
    for cached in (get_engine, get_async_engine, _configured_url):
        cached.cache_clear()


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
