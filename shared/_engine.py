"""The process's engines (sync for plain handlers, asyncio for FastAPI), built on first use.

Behind a transaction-mode pooler (Supavisor on 6543, PgBouncer `pool_mode=transaction`) nothing
may outlive a transaction: `NullPool`, so the pooler keeps server connections warm and a frozen
Lambda holds no slot (or, with `DB_KEEP_CONNECTION`, one connection kept per engine and never
reused stale: `shared._kept_connection`); no startup `options` and no plain `SET` (they leak to
the next client): each transaction sets its limits and identity transaction-locally
(`shared._driver`). Session mode and direct URLs get a pre-pinged `QueuePool` sized by
`pool_size_per_instance`.
What breaks under transaction pooling (LISTEN, session advisory locks, `WITH HOLD` cursors):
https://www.pgbouncer.org/features.html#sql-feature-map-for-pooling-modes
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import URL, Connection, Engine, create_engine, event
from sqlalchemy.pool import NullPool

from shared._connect import connect_args, connect_refreshing_secret, open_connection
from shared._database_url import NO_URL, Purpose, detect_mode, to_sqlalchemy_url
from shared._errors import DatabaseConfigError
from shared._kept_connection import close_kept_connections, keep_one_connection, kept_pool
from shared._metrics import count_checkout, timed_connect
from shared._secrets import DatabaseSecret
from shared._settings import ConnectionMode, Settings, get_settings

if TYPE_CHECKING:  # the asyncio extension needs greenlet, which only FastAPI functions ship
    from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger(__name__)


def pool_size_per_instance(max_connections: int, instances: int, *, uses_data_api: bool) -> int:
    """Supabase's rule of thumb: 40% of max_connections with the Data API, 80% without."""
    budget_percent = 40 if uses_data_api else 80
    return max(1, max_connections * budget_percent // 100 // instances)


def _watch_until_deadline(_dbapi_conn: Any, record: Any, _proxy: Any) -> None:
    """A connection checked out inside an invocation is cut when its deadline passes."""
    record.driver_connection.watch_until_deadline()


def _stop_watching(_dbapi_conn: Any, record: Any) -> None:
    if record.driver_connection is not None:
        record.driver_connection.stop_watching()


def _engine_options(url: URL, settings: Settings, mode: ConnectionMode) -> dict[str, Any]:
    """What `create_engine` and `create_async_engine` get alike."""
    options: dict[str, Any] = {
        "connect_args": connect_args(url, mode, settings),
        "hide_parameters": True,  # error messages never quote row values
    }
    if mode is ConnectionMode.TRANSACTION and settings.db_keep_connection:
        options |= kept_pool()
    elif mode is ConnectionMode.TRANSACTION:
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
        connect = partial(open_connection, timeout_ms)
    else:
        connect = partial(connect_refreshing_secret, secret, settings)
    # Timed here and counted at checkout: every connection, new or kept, is counted once.
    event.listen(engine, "do_connect", timed_connect(connect))
    if mode is ConnectionMode.TRANSACTION and settings.db_keep_connection:
        keep_one_connection(engine, settings.db_keep_connection_max_idle_s)  # checks first
    event.listen(engine, "checkout", count_checkout)
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
    """Close any kept connection, then drop the engines and the secret's URL, as a new
    instance would (tests, SnapStart)."""
    close_kept_connections(
        get_engine() if get_engine.cache_info().currsize else None,
        get_async_engine() if get_async_engine.cache_info().currsize else None,
    )
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
