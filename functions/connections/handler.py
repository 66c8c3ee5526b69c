"""Connection monitor as a plain Lambda handler: who holds the database's connections.

Not public: it names every application using the database, so it answers only callers with a
service_role access token (401 without a valid token, 403 for any other caller).
"""

from __future__ import annotations

from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.connections.report import read_report
from shared.auth import require_service_role
from shared.db import autocommit_connection
from shared.http import LambdaEvent, LambdaResponse, json_response, lambda_boundary


@lambda_boundary
def handler(event: LambdaEvent, context: LambdaContext) -> LambdaResponse:
    """Report connection usage by application name and state, to the service role only."""
    require_service_role(event)
    with autocommit_connection() as conn:
        report = read_report(conn)
    return json_response(200, report)
