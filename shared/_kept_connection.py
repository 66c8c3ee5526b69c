"""`DB_KEEP_CONNECTION`: a warm instance keeps its pooler connection, and never reuses a stale one.

With NullPool every request logs in to the pooler (TLS and SCRAM: most of a warm request's
database time). A transaction-mode pooler holds no server connection for an idle client, so an
instance may instead keep its one client connection between requests, as AWS's Lambda guidance
does for every connection; the cost is a pooler client slot held while the instance is idle.
https://docs.aws.amazon.com/lambda/latest/dg/best-practices.html

Each engine gets a queue pool of one (`kept_pool`): the one connection an instance's request
uses is kept; a second one opened at the same time (never on Lambda, which runs one request per
instance; concurrent requests on a local server) is closed when returned, as NullPool would,
rather than waited for. Returning it costs no round trip: SQLAlchemy skips its reset when the
transaction ended through the `Connection`, and otherwise psycopg's rollback returns at once
when the server's transaction status is idle. Everything transaction-scoped (the prelude,
identity, statement timeout, the deadline watch) is per checkout and stays as it was.

Between two requests the pooler may have closed the connection (its client idle timeout, a
restart of the pooler or of Postgres behind it), or a NAT may have forgotten it without a word.
So at checkout, before any byte is sent (`_replace_if_stale`):

- a socket readable while idle is a closed connection or an error sent before closing (nothing
  else arrives unasked here: no LISTEN, no running statement): replace it;
- a connection idle longer than `DB_KEEP_CONNECTION_MAX_IDLE_S` is replaced too. The default,
  300 s, is under the shortest idle timeout a client connection meets by default: AWS NAT
  gateway drops a connection idle for 350 s
  (https://docs.aws.amazon.com/vpc/latest/userguide/nat-gateway-troubleshooting.html#nat-gateway-troubleshooting-timeout);
  PgBouncer's `client_idle_timeout` is off by default (`server_idle_timeout`, 600 s, concerns
  its server connections) (https://www.pgbouncer.org/config.html#client_idle_timeout), and so
  is Supavisor's (`client_idle_timeout` 0 in its tenant record:
  https://github.com/supabase/supavisor/blob/main/lib/supavisor/tenants/tenant.ex). Lower it
  for a pooler configured with a shorter one.

Raising `DisconnectionError` from a `checkout` listener makes SQLAlchemy's pool discard the
connection and open a new one for the same checkout.
https://docs.sqlalchemy.org/en/21/core/pooling.html#disconnect-handling-pessimistic
What no check can see (dropped in the instant before use) the driver resends once
(`shared._driver`); a connection that stops answering mid-request is cut at the deadline as any
other (503), and found closed at the next checkout. Idle time is wall-clock time: the instance
is frozen between invocations, and a clock that pauses with it would undercount what the
pooler and the NAT count. Nothing waits at shutdown: the process ends, its socket closes, and
the pooler forgets the client. Before a SnapStart snapshot `close_kept_connections` runs.
"""

from __future__ import annotations

import asyncio
import logging
import select
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger(__name__)

IDLE_SINCE = "kept_connection_idle_since"
"""Key in the pool record's `info`: when the connection went back to the pool."""


def kept_pool() -> dict[str, Any]:
    """Engine options: keep one connection; open (and then close) more only if asked at once."""
    return {"pool_size": 1, "max_overflow": -1}


def keep_one_connection(engine: Engine, max_idle_s: float) -> None:
    """Stamp connections returned to the pool; replace stale ones at checkout.

    Call before any other `checkout` listener, so that those see the replacement.
    """

    def idle_from_now(_dbapi_conn: Any, record: Any) -> None:
        record.info[IDLE_SINCE] = time.time()

    def replace_if_stale(_dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        _replace_if_stale(record, max_idle_s)

    event.listen(engine, "checkin", idle_from_now)
    event.listen(engine, "checkout", replace_if_stale)


def _replace_if_stale(record: Any, max_idle_s: float) -> None:
    """Raise `DisconnectionError` for a kept connection that must not be used again."""
    idle_since = record.info.pop(IDLE_SINCE, None)
    if idle_since is None:
        return  # opened for this checkout
    driver_connection = record.driver_connection
    driver_connection.reused = True  # what no check sees, the driver resends once
    if driver_connection.closed:
        reason = "closed"
    elif _readable(driver_connection.pgconn.socket):
        reason = "closed by the server or pooler while idle"
    elif time.time() - idle_since > max_idle_s:
        reason = "idle longer than DB_KEEP_CONNECTION_MAX_IDLE_S"
    else:
        return
    logger.info("kept database connection replaced", extra={"reason": reason})
    raise DisconnectionError(f"kept connection {reason}")


def _readable(fileno: int) -> bool:
    """Whether the socket has something to read (or hung up), without waiting."""
    poller = select.poll()
    poller.register(fileno, select.POLLIN)
    return bool(poller.poll(0))


def close_kept_connections(engine: Engine | None, async_engine: AsyncEngine | None) -> None:
    """Close the connections the engines keep (before a SnapStart snapshot, or a new engine).

    An asyncio engine closes them on an event loop of its own when none is running in this
    thread; inside a running loop they are left to the garbage collector.
    """
    if engine is not None and not isinstance(engine.pool, NullPool):
        engine.dispose()
    if async_engine is None or isinstance(async_engine.sync_engine.pool, NullPool):
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        loop = asyncio.new_event_loop()  # not asyncio.run: it would unset this thread's loop
        try:
            loop.run_until_complete(async_engine.dispose())
        finally:
            loop.close()
    else:
        async_engine.sync_engine.dispose(close=False)
