"""Connection usage against max_connections, in the terms of Supabase's 40% / 80% guidance.

Read by two functions: `connections` answers it to a service_role caller on request, and the
scheduled `monitor` publishes it as metrics every minute, so an alarm can fire before the
budget is spent. Both read as the login role: `pg_stat_activity` shows another role's
connections' state only to a member of that role or of `pg_read_all_stats`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import Connection, text

from shared._deadline import remaining_seconds
from shared._engine import pool_size_per_instance
from shared._metrics import record
from shared._settings import get_settings

logger = logging.getLogger(__name__)

# One statement, one row: the server's limit and who holds its connections right now.
USAGE_QUERY = text(
    """
    SELECT current_setting('max_connections')::int AS max_connections,
           coalesce((
               SELECT json_agg(usage ORDER BY usage.connections DESC, usage.application_name)
               FROM (
                   SELECT coalesce(nullif(application_name, ''), '(unnamed)') AS application_name,
                          coalesce(state, '(hidden)') AS state,
                          count(*) AS connections
                   FROM pg_stat_activity
                   WHERE backend_type = 'client backend'
                   GROUP BY 1, 2
               ) AS usage
           ), '[]'::json) AS by_application
    """
)

# pg_stat_activity's states as the metrics name them; anything else (`fastpath function
# call`, `disabled`, a state hidden from this role) is `other`.
_STATES = {
    "active": "active",
    "idle": "idle",
    "idle in transaction": "idle_in_transaction",
    "idle in transaction (aborted)": "idle_in_transaction",
}
POOLER_ADMIN_DATABASE = "pgbouncer"
"""The admin console's own pseudo-database, whose one client is the monitor itself."""


def connection_budget(max_connections: int, *, uses_data_api: bool) -> int:
    """Connections the functions may use: 40% of max_connections with the Data API, 80%
    without (the same rule `pool_size_per_instance` sizes pools by)."""
    return pool_size_per_instance(max_connections, 1, uses_data_api=uses_data_api)


def _budget(max_connections: int, in_use: int, *, uses_data_api: bool) -> dict[str, Any]:
    limit = connection_budget(max_connections, uses_data_api=uses_data_api)
    return {
        "limit_percent": 40 if uses_data_api else 80,
        "limit_connections": limit,
        "within_limit": in_use <= limit,
    }


def build_report(max_connections: int, by_application: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals and percentages from the raw usage rows."""
    in_use = sum(int(row["connections"]) for row in by_application)
    return {
        "max_connections": max_connections,
        "in_use": in_use,
        "in_use_percent": round(100 * in_use / max_connections, 1),
        "guidance": {
            "with_data_api": _budget(max_connections, in_use, uses_data_api=True),
            "without_data_api": _budget(max_connections, in_use, uses_data_api=False),
        },
        "by_application": by_application,
    }


@dataclass(frozen=True)
class ConnectionUsage:
    """The server's max_connections and its client connections by application and state."""

    max_connections: int
    by_application: list[dict[str, Any]]

    @property
    def total(self) -> int:
        return sum(int(row["connections"]) for row in self.by_application)

    def by_state(self) -> dict[str, int]:
        """Connections per state of the metrics' closed set, zeros included."""
        counts = dict.fromkeys(("active", "idle", "idle_in_transaction", "other"), 0)
        for row in self.by_application:
            counts[_STATES.get(row["state"], "other")] += int(row["connections"])
        return counts


def read_connection_usage(conn: Connection) -> ConnectionUsage:
    """Run the usage query (as the login role, to see every connection's state)."""
    row = conn.execute(USAGE_QUERY).one()
    return ConnectionUsage(row.max_connections, row.by_application)


def read_connection_report(conn: Connection) -> dict[str, Any]:
    """Run the usage query and build the report."""
    usage = read_connection_usage(conn)
    return build_report(usage.max_connections, usage.by_application)


def publish_connection_usage(usage: ConnectionUsage) -> None:
    """Record the usage as metrics, and log who holds the connections for a person to read."""
    uses_data_api = get_settings().db_uses_data_api
    budget = connection_budget(usage.max_connections, uses_data_api=uses_data_api)
    used_percent = round(100 * usage.total / budget, 1)
    for state, count in usage.by_state().items():
        record("DatabaseConnections", count, state=state)
    record("DatabaseConnectionsTotal", usage.total)
    record("DatabaseMaxConnections", usage.max_connections)
    record("ConnectionBudgetUsed", used_percent)
    logger.info(
        "connection usage",
        extra={
            "connections": usage.total,
            "max_connections": usage.max_connections,
            "budget_connections": budget,
            "budget_used_percent": used_percent,
            "by_application": usage.by_application,
        },
    )


def read_pooler_clients(admin_url: str) -> int:
    """Clients of the pooler's databases (`SHOW POOLS`: every `cl_*` column), from a PgBouncer
    admin console; its own pseudo-database, where the monitor is a client, left out."""
    left = remaining_seconds()
    timeout = get_settings().db_connect_timeout
    if left is not None:
        timeout = max(1, min(timeout, int(left)))
    with psycopg.connect(
        admin_url, autocommit=True, connect_timeout=timeout, prepare_threshold=None
    ) as admin:
        cursor = admin.execute("SHOW POOLS")
        columns = [column.name for column in cursor.description or ()]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    return sum(
        int(value)
        for row in rows
        if row.get("database") != POOLER_ADMIN_DATABASE
        for name, value in row.items()
        if name.startswith("cl_")
    )


def publish_pooler_clients() -> None:
    """Record PoolerClients when a pooler admin console is configured; a pooler that cannot be
    read is logged and leaves the metric out, never the database's."""
    admin_url = get_settings().pooler_admin_url
    if admin_url is None:
        return
    try:
        clients = read_pooler_clients(admin_url.get_secret_value())
    except psycopg.Error as exc:  # the message can quote the host: the class only
        logger.warning("pooler clients not read", extra={"error": type(exc).__name__})
        return
    record("PoolerClients", clients)
