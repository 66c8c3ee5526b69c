"""How one connection to the database opens: libpq's arguments, TLS, the deadline, the secret.

- `prepare_threshold=None` in transaction mode: psycopg's automatic prepared statements are
  named per connection (`_pg3_0`, ...), so two clients sharing a server connection through the
  pooler collide, or one silently runs the other's statement.
  https://www.psycopg.org/psycopg3/docs/advanced/prepare.html#using-prepared-statements-with-pgbouncer
- TLS verified wherever the CA is known: Supabase's hosts get `verify-full` against Supabase's
  public root CA (shipped in `shared/certs/`), other hosts `require`, loopback libpq's `prefer`;
  the URL's `sslmode`, then DB_SSLMODE, win. https://supabase.com/docs/guides/platform/ssl-enforcement
- `connect_timeout` never past the invocation's deadline, so an outage answers 503 in time.
- A URL from a secret is re-read after a failed login, so a rotated password costs no request.
"""

from __future__ import annotations

import logging
import re
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import URL

from shared._database_url import to_sqlalchemy_url
from shared._deadline import DeadlineExceededError, remaining_seconds
from shared._driver import MIN_CONNECT_TIMEOUT_S, AsyncPoolerConnection, PoolerConnection
from shared._secrets import DatabaseSecret
from shared._settings import LOOPBACK_HOSTS, ConnectionMode, Settings

logger = logging.getLogger(__name__)

SUPABASE_DOMAINS = (".supabase.com", ".supabase.co")
SUPABASE_ROOT_CA = Path(__file__).parent / "certs" / "supabase-root-2021-ca.pem"
"""Supabase Root 2021 CA (valid until 2031-04-26), which its pooler and databases chain to."""
VERIFYING_MODES = frozenset({"verify-ca", "verify-full"})
TLS_PARAMETERS = ("sslmode", "sslrootcert")
# What poolers and Postgres say to a wrong password; libpq gives no SQLSTATE at connect time.
AUTH_FAILURE = re.compile(r"authentication failed|password", re.IGNORECASE)


def connect_args(url: URL, mode: ConnectionMode, settings: Settings) -> dict[str, Any]:
    args: dict[str, Any] = {
        "client_encoding": "utf8",
        "connect_timeout": settings.db_connect_timeout,
        "application_name": settings.db_application_name,
    }
    if mode is ConnectionMode.TRANSACTION:
        # connect_args override the URL's query, so no URL can turn preparation back on.
        args["prepare_threshold"] = None
    return args | tls_args(url, settings)


def tls_args(url: URL, settings: Settings) -> dict[str, str]:
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


def open_connection(
    timeout_ms: int, dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]
) -> Any:
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


def connect_refreshing_secret(
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
        return open_connection(timeout_ms, dialect, record, cargs, cparams)
    except dialect.loaded_dbapi.OperationalError as exc:
        fresh = secret.refresh(url) if AUTH_FAILURE.search(str(exc)) else None
        if fresh is None:
            raise
    cparams.update(_url_params(fresh, settings))
    logger.info("database credentials refreshed from the secret after a failed login")
    return open_connection(timeout_ms, dialect, record, cargs, cparams)


def _url_params(url: str, settings: Settings) -> dict[str, Any]:
    """libpq's host, port, dbname, user and password from a URL, all of them (None for unset),
    and its TLS settings: a secret that moves the database elsewhere takes them along."""
    parsed = to_sqlalchemy_url(url)
    params = dict.fromkeys(("host", "port", "dbname", "user", "password", *TLS_PARAMETERS))
    params.update(parsed.translate_connect_args(username="user", database="dbname"))
    params.update({key: parsed.query[key] for key in TLS_PARAMETERS if key in parsed.query})
    return params | tls_args(parsed, settings)
