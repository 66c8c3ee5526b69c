"""Everything a plain Lambda handler imports from the platform: no FastAPI, no Mangum.

from shared.plain import plain_handler

@plain_handler
def handler(conn: Connection) -> dict[str, str]: ...
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared._boundary import (
        LambdaEvent,
        LambdaResponse,
        json_response,
        lambda_boundary,
        request_header,
    )
    from shared._connection_usage import (
        publish_connection_usage,
        publish_pooler_clients,
        read_connection_report,
        read_connection_usage,
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
    from shared._scheduled import scheduled_handler
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
    "publish_connection_usage",
    "publish_pooler_clients",
    "read_connection_report",
    "read_connection_usage",
    "read_session",
    "request_header",
    "require_identity",
    "require_service_role",
    "scheduled_handler",
    "session_scope",
    "transaction",
]

# Each name is imported where it is first used: a function pays at cold start, and ships in
# its zip, only what it uses (the health check needs neither the ORM nor PyJWT).
_MODULES = {
    "AppError": "shared._errors",
    "Base": "shared._models",
    "ConflictError": "shared._errors",
    "ForbiddenError": "shared._errors",
    "Identity": "shared._identity",
    "LambdaEvent": "shared._boundary",
    "LambdaResponse": "shared._boundary",
    "NotAuthenticatedError": "shared._errors",
    "NotFoundError": "shared._errors",
    "ServiceUnavailableError": "shared._errors",
    "acting_as": "shared._identity",
    "acting_as_login_role": "shared._identity",
    "autocommit_connection": "shared._engine",
    "json_response": "shared._boundary",
    "lambda_boundary": "shared._boundary",
    "plain_handler": "shared._plain_handler",
    "pool_size_per_instance": "shared._engine",
    "publish_connection_usage": "shared._connection_usage",
    "publish_pooler_clients": "shared._connection_usage",
    "read_connection_report": "shared._connection_usage",
    "read_connection_usage": "shared._connection_usage",
    "read_session": "shared._sessions",
    "request_header": "shared._boundary",
    "require_identity": "shared._tokens",
    "require_service_role": "shared._tokens",
    "scheduled_handler": "shared._scheduled",
    "session_scope": "shared._sessions",
    "transaction": "shared._engine",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562)."""
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
