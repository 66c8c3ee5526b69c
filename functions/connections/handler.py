"""Connection monitor as a plain Lambda handler: who holds the database's connections.

Not public: it names every application using the database, so it answers only callers with a
service_role access token (401 without a valid token, 403 for any other caller). Once the caller
is verified, it reads as the login role: `pg_stat_activity` shows another role's connections'
state only to a member of that role or of `pg_read_all_stats`, which the API roles are not.
"""

from __future__ import annotations

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.plain import (
    LambdaEvent,
    LambdaResponse,
    acting_as_login_role,
    autocommit_connection,
    json_response,
    lambda_boundary,
    read_connection_report,
    require_service_role,
)


@lambda_boundary
def handler(event: LambdaEvent, context: LambdaContext) -> LambdaResponse:
    """Report connection usage by application name and state, to the service role only."""
    require_service_role(event)
    with acting_as_login_role(), autocommit_connection() as conn:
        report = read_connection_report(conn)
    return json_response(200, report)
