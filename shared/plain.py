"""Everything a plain Lambda handler imports from the platform: no FastAPI, no Mangum.

from shared.plain import plain_handler

@plain_handler
def handler(conn: Connection) -> dict[str, str]: ...
"""

from shared._boundary import (
    LambdaEvent,
    LambdaResponse,
    json_response,
    lambda_boundary,
    request_header,
)
from shared._engine import autocommit_connection, pool_size_per_instance, transaction
from shared._errors import (
    AppError,
    ConflictError,
    ForbiddenError,
    NotAuthenticatedError,
    NotFoundError,
    ServiceUnavailableError,
)
from shared._identity import Identity, acting_as, acting_as_login_role
from shared._models import Base
from shared._plain_handler import plain_handler
from shared._sessions import read_session, session_scope
from shared._tokens import require_identity, require_service_role

__all__ = [
    "AppError",
    "Base",
    "ConflictError",
    "ForbiddenError",
    "Identity",
    "LambdaEvent",
    "LambdaResponse",
    "NotAuthenticatedError",
    "NotFoundError",
    "ServiceUnavailableError",
    "acting_as",
    "acting_as_login_role",
    "autocommit_connection",
    "json_response",
    "lambda_boundary",
    "plain_handler",
    "pool_size_per_instance",
    "read_session",
    "request_header",
    "require_identity",
    "require_service_role",
    "session_scope",
    "transaction",
]
