"""Everything a FastAPI function imports from the platform.

app = create_app(router, title="Items API")
handler = lambda_handler(app)
"""

from shared._dependencies import (
    PublicReadSessionDep,
    ServiceRoleDep,
    UserDep,
    UserReadSessionDep,
    UserSessionDep,
)
from shared._errors import (
    AppError,
    ConflictError,
    ForbiddenError,
    NotAuthenticatedError,
    NotFoundError,
    ServiceUnavailableError,
)
from shared._fastapi_app import create_app, error_responses, lambda_handler
from shared._identity import Identity
from shared._models import Base
from shared._sessions import async_read_session, async_session_scope

__all__ = [
    "AppError",
    "Base",
    "ConflictError",
    "ForbiddenError",
    "Identity",
    "NotAuthenticatedError",
    "NotFoundError",
    "PublicReadSessionDep",
    "ServiceRoleDep",
    "ServiceUnavailableError",
    "UserDep",
    "UserReadSessionDep",
    "UserSessionDep",
    "async_read_session",
    "async_session_scope",
    "create_app",
    "error_responses",
    "lambda_handler",
]
