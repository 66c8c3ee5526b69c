"""Connection monitoring that runs by itself: every minute (a schedule in serverless.yml), it
publishes the database's connection usage against max_connections and the 40% / 80% budget,
and the pooler's clients where a PgBouncer admin console is configured (POOLER_ADMIN_URL).

It reads as the login role, the explicit opt-in: `pg_stat_activity` shows other roles'
connections' state only to a member of those roles or of `pg_read_all_stats`. No caller is
involved: the schedule invokes it, and what it reads goes to metrics and one log line.
"""

from __future__ import annotations

from shared.plain import (
    acting_as_login_role,
    autocommit_connection,
    publish_connection_usage,
    publish_pooler_clients,
    read_connection_usage,
    scheduled_handler,
)


@scheduled_handler
def handler() -> None:
    """Publish who holds the database's connections, and the pooler's clients."""
    with acting_as_login_role(), autocommit_connection() as conn:
        usage = read_connection_usage(conn)
    publish_connection_usage(usage)
    publish_pooler_clients()
