"""Readiness check as a plain Lambda handler: no FastAPI, so the smallest cold start."""

from __future__ import annotations

from aws_lambda_powertools.utilities.typing import LambdaContext
from sqlalchemy import text

from shared.db import autocommit_connection
from shared.http import LambdaEvent, LambdaResponse, json_response, lambda_boundary


@lambda_boundary
def handler(event: LambdaEvent, context: LambdaContext) -> LambdaResponse:
    """Answer 200 when one query goes through the pooler, 503 when it cannot."""
    with autocommit_connection() as conn:
        conn.execute(text("SELECT 1"))
    return json_response(200, {"status": "ok", "database": "reachable"})
