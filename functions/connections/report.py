"""Connection usage against max_connections, in the terms of Supabase's 40% / 80% guidance."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

from shared.plain import pool_size_per_instance

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


def _budget(max_connections: int, in_use: int, *, uses_data_api: bool) -> dict[str, Any]:
    limit = pool_size_per_instance(max_connections, 1, uses_data_api=uses_data_api)
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


def read_report(conn: Connection) -> dict[str, Any]:
    """Run the usage query and build the report."""
    row = conn.execute(USAGE_QUERY).one()
    return build_report(row.max_connections, row.by_application)
