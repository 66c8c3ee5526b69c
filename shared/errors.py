"""Errors, and the one mapping from errors to HTTP status and JSON body.

    AppError
    ├── NotFoundError            404
    │   └── ItemNotFoundError
    ├── ConflictError            409
    └── ServiceUnavailableError  503 + Retry-After
        ├── DatabaseUnavailableError
        └── DatabaseConfigError

Database errors map too: IntegrityError -> 409, OperationalError / InterfaceError (cannot
connect, pooler full, statement timeout, connection lost) -> 503 + Retry-After. Anything else
is a 500 with a generic body. Responses and log lines carry the error's class, SQLSTATE and
where it was raised, never its message: driver messages can quote row values, and connection
errors can quote the host.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

RETRY_AFTER_SECONDS = 2
"""Long enough for a full pooler to free a slot, short enough for a client's first retry."""

logger = logging.getLogger(__name__)


class AppError(Exception):
    """Base of the errors this application raises on purpose."""

    status_code = 500
    code = "internal_error"


class NotFoundError(AppError):
    """The requested resource does not exist."""

    status_code = 404
    code = "not_found"


class ItemNotFoundError(NotFoundError):
    """No item has the requested id."""

    def __init__(self, item_id: int) -> None:
        super().__init__(f"Item {item_id} not found")


class ConflictError(AppError):
    """The request conflicts with data already stored."""

    status_code = 409
    code = "conflict"


class ServiceUnavailableError(AppError):
    """A dependency is down or full; the client may retry."""

    status_code = 503
    code = "service_unavailable"


class DatabaseUnavailableError(ServiceUnavailableError):
    """The database or its pooler cannot be reached or is full."""


class DatabaseConfigError(ServiceUnavailableError):
    """The database URL or secret is missing or malformed."""


class DatabaseSecretNotSetError(ServiceUnavailableError):
    """The deployed database secret still holds the stack's placeholder."""


class CommitOutcomeUnknownError(psycopg.OperationalError):
    """The connection was lost while COMMIT was in flight: the change may or may not be stored.

    Nobody can tell at that moment: a stalled pooler may still deliver the COMMIT after the
    request has answered. It stays an OperationalError, so SQLAlchemy discards the connection.
    """


@dataclass(frozen=True)
class ErrorResponse:
    """What to send back for an error: status, JSON body and headers."""

    status_code: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def _sqlstate(exc: BaseException) -> str | None:
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    return getattr(orig, "sqlstate", None)


def _raised_at(exc: BaseException) -> str:
    """The innermost frame: enough to find the bug, unlike a trace that may leak values."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "unknown"


def _unavailable(message: str, code: str = ServiceUnavailableError.code) -> ErrorResponse:
    return ErrorResponse(
        status_code=503,
        body={"code": code, "message": message},
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def error_response(exc: BaseException) -> ErrorResponse:
    """Map any exception to the response the client gets, and log it safely."""
    if isinstance(exc, ServiceUnavailableError):
        response = _unavailable(str(exc))
    elif isinstance(exc, AppError):
        response = ErrorResponse(exc.status_code, {"code": exc.code, "message": str(exc)})
    elif isinstance(exc, IntegrityError):
        response = ErrorResponse(
            409, {"code": ConflictError.code, "message": "The request conflicts with stored data"}
        )
    elif isinstance(exc, DBAPIError) and isinstance(exc.orig, CommitOutcomeUnknownError):
        response = _unavailable(
            "The change may or may not have been stored: read it back before retrying",
            code="commit_outcome_unknown",
        )
    elif isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        response = _unavailable("The database is unavailable, retry shortly")
    else:
        response = ErrorResponse(500, {"code": AppError.code, "message": "Internal server error"})
    if response.status_code >= 500:
        logger.error(
            "request failed",
            extra={
                "status_code": response.status_code,
                "error": type(exc).__name__,
                "sqlstate": _sqlstate(exc),
                "raised_at": _raised_at(exc),
            },
        )
    return response


def invalid_request(errors: Sequence[Mapping[str, Any]]) -> ErrorResponse:
    """400 for a body that is not JSON, 422 with the failing fields for anything else."""
    if any(error.get("type") == "json_invalid" for error in errors):
        return ErrorResponse(400, {"code": "malformed_json", "message": "The body is not JSON"})
    # Only location, message and type: pydantic's `input` would echo the client's data back.
    details = [
        {"loc": list(error["loc"]), "message": error["msg"], "type": error["type"]}
        for error in errors
    ]
    return ErrorResponse(
        422, {"code": "validation_error", "message": "The request is invalid", "details": details}
    )


def http_error(
    status_code: int, message: str, headers: Mapping[str, str] | None = None
) -> ErrorResponse:
    """Errors the framework raises itself: unknown route (404), wrong method (405)."""
    codes = {404: NotFoundError.code, 405: "method_not_allowed"}
    return ErrorResponse(
        status_code,
        {"code": codes.get(status_code, "http_error"), "message": message},
        dict(headers or {}),
    )
