"""Readiness check as a plain Lambda handler: no FastAPI, so the smallest cold start."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_lambda_powertools.logging import correlation_paths
from sqlalchemy import text

from shared.db import autocommit_connection
from shared.http import LambdaEvent, LambdaResponse, json_errors, json_response
from shared.logs import logger

if TYPE_CHECKING:  # a Protocol, for type checking only: no Mangum in this function's zip
    from mangum.types import LambdaContext


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@json_errors
def handler(event: LambdaEvent, context: LambdaContext) -> LambdaResponse:
    """Answer 200 when one query goes through the pooler, 503 when it cannot."""
    with autocommit_connection() as conn:
        conn.execute(text("SELECT 1"))
    return json_response(200, {"status": "ok", "database": "reachable"})
