"""Everything a FastAPI function imports from the platform.

app = create_app(router, title="Items API")
handler = lambda_handler(app)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# Each name is imported where it is first used, as in `shared.plain`.
_MODULES = {
    "AppError": "shared._errors",
    "Base": "shared._models",
    "ConflictError": "shared._errors",
    "ForbiddenError": "shared._errors",
    "Identity": "shared._identity",
    "NotAuthenticatedError": "shared._errors",
    "NotFoundError": "shared._errors",
    "PublicReadSessionDep": "shared._dependencies",
    "ServiceRoleDep": "shared._dependencies",
    "ServiceUnavailableError": "shared._errors",
    "UserDep": "shared._dependencies",
    "UserReadSessionDep": "shared._dependencies",
    "UserSessionDep": "shared._dependencies",
    "async_read_session": "shared._sessions",
    "async_session_scope": "shared._sessions",
    "create_app": "shared._fastapi_app",
    "error_responses": "shared._fastapi_app",
    "lambda_handler": "shared._fastapi_app",
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
