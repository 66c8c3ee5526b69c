"""Readiness check as a plain Lambda handler: no FastAPI, so the smallest cold start."""

from __future__ import annotations

from sqlalchemy import Connection, text

from shared.plain import plain_handler


@plain_handler
def handler(conn: Connection) -> dict[str, str]:
    """Answer 200 when one query goes through the pooler, 503 when it cannot."""
    conn.execute(text("SELECT 1"))
    return {"status": "ok", "database": "reachable"}
