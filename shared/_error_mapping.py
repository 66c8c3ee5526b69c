"""The one mapping from an exception to the HTTP status, JSON body and headers a client gets.

Database errors map by SQLSTATE (https://www.postgresql.org/docs/current/errcodes-appendix.html):
constraint violations are 409, bad values 422, insufficient privilege (a grant or a row-level
security policy refusing) 403, timeouts, conflicts and lost or full connections 503 with
Retry-After; anything else is a bug: 500, logged. Nothing is retried here: only the route knows
whether its work may run twice. Responses and logs name the error's class, SQLSTATE and schema
names, never its message, which can quote row values or the host.

Each 503 has a cause and each 401 a reason, from closed sets, counted in the invocation's
metrics (`shared._metrics`: ServiceUnavailable by cause, TokenRefused by reason).
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from shared._deadline import remaining_seconds
from shared._driver import CommitOutcomeUnknownError
from shared._errors import (
    AppError,
    ConfigurationError,
    ConflictError,
    ForbiddenError,
    NotAuthenticatedError,
    NotFoundError,
    ServiceUnavailableError,
)
from shared._metrics import record

RETRY_AFTER_SECONDS = 2
"""Long enough for a full pooler to free a slot, short enough for a client's first retry."""

PROJECT_PACKAGES = frozenset({"functions", "shared"})
"""Top-level packages whose frames a 500's log line points at; add your own here."""

NOT_WHERE_BUGS_ARE = frozenset({"shared._driver"})
"""Project modules that only carry statements to the driver: the frame above them is the one."""

logger = logging.getLogger(__name__)

# libpq's words, at connect, for a certificate it refused and for a server without TLS.
_TLS_REFUSED = re.compile(
    r"certificate verify failed|does not match host name|root certificate file"
    r"|server does not support SSL|SSL error"
)
TLS_NOT_VERIFIED = (
    "the database server's TLS certificate failed verification or it offers no TLS: "
    "check sslmode and DB_SSLROOTCERT"
)


@dataclass(frozen=True)
class ErrorResponse:
    """What to send back for an error: status, JSON body and headers."""

    status_code: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    cause: str | None = None
    """A 503's cause (`shared._metrics.CAUSES`); None for any other status."""


@dataclass(frozen=True)
class _Answer:
    status_code: int
    code: str
    message: str
    cause: str | None = None


_INTERNAL = _Answer(500, AppError.code, "Internal server error")
_CONFLICT = _Answer(409, ConflictError.code, "The request conflicts with stored data")
_UNSTORABLE = _Answer(422, "validation_error", "The request holds a value that cannot be stored")
_NOT_ALLOWED = _Answer(403, ForbiddenError.code, "The access token may not do this")
_UNAVAILABLE = _Answer(
    503,
    ServiceUnavailableError.code,
    "The database is unavailable, retry shortly",
    "pooler_unreachable",
)
_TOO_SLOW = _Answer(
    503,
    ServiceUnavailableError.code,
    "The database did not answer in time, retry shortly",
    "statement_timeout",
)
_OUTCOME_UNKNOWN = _Answer(
    503,
    "commit_outcome_unknown",
    "The change may or may not have been stored: read it back before retrying",
    "commit_outcome_unknown",
)
_COLLIDED = _Answer(
    503,
    ServiceUnavailableError.code,
    "The request collided with another one, retry shortly",
    "serialization",
)

_BY_SQLSTATE = {
    "23505": _CONFLICT,  # unique_violation
    "23P01": _CONFLICT,  # exclusion_violation
    "23503": _CONFLICT,  # foreign_key_violation
    "23001": _CONFLICT,  # restrict_violation
    "23514": _UNSTORABLE,  # check_violation
    "42501": _NOT_ALLOWED,  # insufficient_privilege, also a row-level security WITH CHECK
    "57014": _TOO_SLOW,  # query_canceled: statement_timeout or a cancel request
    "55P03": _TOO_SLOW,  # lock_not_available: lock_timeout or NOWAIT
    "40001": _COLLIDED,  # serialization_failure
    "40P01": _COLLIDED,  # deadlock_detected
}
_BY_SQLSTATE_CLASS = {
    "22": _UNSTORABLE,  # data_exception
    "08": _UNAVAILABLE,  # connection_exception; PgBouncer's own errors are 08P01
    "53": _UNAVAILABLE,  # insufficient_resources: too_many_connections, out_of_memory
    "57": _UNAVAILABLE,  # operator_intervention: admin_shutdown, cannot_connect_now
}


def _driver_error(exc: BaseException) -> BaseException:
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return exc.orig
    return exc


def _database_answer(exc: BaseException) -> _Answer | None:
    """The answer for a database error by its SQLSTATE, or by its class without one."""
    driver = _driver_error(exc)
    if isinstance(driver, CommitOutcomeUnknownError):
        return _OUTCOME_UNKNOWN
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return _UNAVAILABLE
    sqlstate = getattr(driver, "sqlstate", None)
    if sqlstate:
        return _BY_SQLSTATE.get(sqlstate) or _BY_SQLSTATE_CLASS.get(sqlstate[:2], _INTERNAL)
    if isinstance(driver, psycopg.DataError):
        return _UNSTORABLE  # refused by the driver before sending, e.g. NUL in text
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError) or isinstance(
        driver, psycopg.OperationalError | psycopg.InterfaceError
    ):
        return _UNAVAILABLE
    if isinstance(exc, DBAPIError) or isinstance(driver, psycopg.Error):
        return _INTERNAL
    return None


def _frame_name(frame: Any, lineno: int) -> str:
    return f"{frame.f_globals.get('__name__', '?')}:{lineno} in {frame.f_code.co_name}"


def _raised_at(exc: BaseException) -> str:
    """The innermost frame of project code: where to look, without a trace that may leak values."""
    frames = list(traceback.walk_tb(exc.__traceback__))
    for frame, lineno in reversed(frames):
        module = str(frame.f_globals.get("__name__", ""))
        if module.partition(".")[0] in PROJECT_PACKAGES and module not in NOT_WHERE_BUGS_ARE:
            return _frame_name(frame, lineno)
    return _frame_name(*frames[-1]) if frames else "unknown"


def _database_names(exc: BaseException) -> dict[str, str | None]:
    """Which constraint, column and table: names from the schema, never values."""
    diag = getattr(_driver_error(exc), "diag", None)
    return {
        "constraint": getattr(diag, "constraint_name", None),
        "column": getattr(diag, "column_name", None),
        "table": getattr(diag, "table_name", None),
    }


def _log(level: int, event: str, exc: BaseException, status_code: int) -> None:
    driver = _driver_error(exc)
    fields: dict[str, Any] = {"status_code": status_code, "error": type(exc).__name__}
    if driver is not exc or isinstance(exc, psycopg.Error):
        fields |= {"sqlstate": getattr(driver, "sqlstate", None), **_database_names(exc)}
    if level >= logging.ERROR:
        fields["raised_at"] = _raised_at(exc)
    logger.log(level, event, extra=fields)


DEADLINE_TOLERANCE_S = 0.01
"""A statement timeout cut to the deadline is set in whole milliseconds, so it can fire a
moment before the deadline itself: still the deadline's doing."""


def _deadline_passed() -> bool:
    remaining = remaining_seconds()
    return remaining is not None and remaining < DEADLINE_TOLERANCE_S


def _response(answer: _Answer, headers: Mapping[str, str] | None = None) -> ErrorResponse:
    """The response, counted in the invocation's metrics: a 503 by cause (the deadline's when
    it has passed, whatever the driver said: it cut the connection or the statement)."""
    retry: dict[str, str] = {}
    cause: str | None = None
    if answer.status_code == 503:
        retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        cause = "deadline" if _deadline_passed() else answer.cause or "pooler_unreachable"
        record("ServiceUnavailable", 1, cause=cause)
    return ErrorResponse(
        answer.status_code,
        {"code": answer.code, "message": answer.message},
        {**retry, **(headers or {})},
        cause,
    )


def error_response(exc: BaseException) -> ErrorResponse:
    """Map any exception to the response the client gets, log it safely, and count it: a 503
    by cause, a 401 by the token check that refused it."""
    if isinstance(exc, ConfigurationError):
        logger.error(
            "configuration error",
            extra={"error": type(exc).__name__, "setting": exc.setting, "reason": str(exc)},
        )
        return _response(_INTERNAL)
    if isinstance(exc, AppError):
        if exc.status_code >= 500:
            level = logging.WARNING if exc.status_code == 503 else logging.ERROR
            _log(level, "request failed", exc, exc.status_code)
        if exc.status_code == 500:
            return _response(_INTERNAL)
        if isinstance(exc, NotAuthenticatedError):
            record("TokenRefused", 1, reason=exc.reason)
        cause = exc.cause if isinstance(exc, ServiceUnavailableError) else None
        return _response(_Answer(exc.status_code, exc.code, str(exc), cause), exc.headers)
    answer = _database_answer(exc) or _INTERNAL
    if answer.status_code == 500:
        _log(logging.ERROR, "request failed", exc, 500)
    elif answer.status_code == 503 and _TLS_REFUSED.search(str(_driver_error(exc))):
        logger.error(
            "database server not verified",
            extra={"status_code": 503, "error": type(exc).__name__, "reason": TLS_NOT_VERIFIED},
        )
    elif answer.status_code == 503:
        _log(logging.WARNING, "database unavailable", exc, 503)
    else:
        _log(logging.INFO, "request refused by the database", exc, answer.status_code)
    return _response(answer)


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
