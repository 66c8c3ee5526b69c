"""Connection monitor as a plain Lambda handler: who holds the database's connections."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_lambda_powertools.logging import correlation_paths

from functions.connections.report import read_report
from shared.db import autocommit_connection
from shared.http import LambdaEvent, LambdaResponse, json_errors, json_response
from shared.logs import logger

if TYPE_CHECKING:  # a Protocol, for type checking only: no Mangum in this function's zip
    from mangum.types import LambdaContext


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@json_errors
def handler(event: LambdaEvent, context: LambdaContext) -> LambdaResponse:
    """Report connection usage by application name and state."""
    with autocommit_connection() as conn:
        report = read_report(conn)
    return json_response(200, report)
