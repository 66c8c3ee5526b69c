"""Errors, and the one mapping from errors to HTTP status and JSON body.

    AppError                          500
    ├── NotAuthenticatedError         401 + WWW-Authenticate: Bearer (no token, or not Bearer)
    │   └── InvalidTokenError             ... error="invalid_token" (bad signature, expired, ...)
    ├── ForbiddenError                403 (a valid token that may not do this)
    ├── NotFoundError                 404 (functions subclass it: ItemNotFoundError)
    ├── ConflictError                 409
    ├── ConfigurationError            500, logged with the setting that is wrong
    │   ├── DatabaseConfigError
    │   └── AuthConfigError
    └── ServiceUnavailableError       503 + Retry-After
        ├── DatabaseSecretNotSetError
        ├── DatabaseUnavailableError      Secrets Manager throttling or not answering
        ├── SigningKeysUnavailableError   the JWKS or the JWT secret cannot be read now
        └── DeadlineExceededError         (shared._deadline) no time left to connect

Database errors map by SQLSTATE (https://www.postgresql.org/docs/current/errcodes-appendix.html):

    23505, 23P01          unique, exclusion violation               409
    23503, 23001          foreign-key, restrict violation           409
    23514, class 22       check violation; data exception: value    422
                          too long, out of range, NUL, bad encoding
    42501                 insufficient privilege: no grant for the  403
                          caller's role, or a row-level security
                          policy's WITH CHECK refused the row
    57014, 55P03          statement timeout or cancel, lock timeout 503 + Retry-After
    40001, 40P01          serialization failure, deadlock           503 + Retry-After
    class 08, 53, 57      connection lost, too many connections,    503 + Retry-After
                          server shutting down
    23502, anything else  not-null violation, syntax error,         500, logged
                          undefined table: bugs in the code

A connection lost while COMMIT was in flight (`CommitOutcomeUnknownError`, raised by
`shared._driver`) is a 503 whose code is `commit_outcome_unknown`: the change may be stored.

Without a SQLSTATE, psycopg's DataError (a value it refuses to send, such as NUL in text) is
a 422; OperationalError and InterfaceError (cannot connect, pooler full, connection lost) and
a full session-mode pool are a 503. So is a server whose TLS certificate fails verification
(another CA, a host name it does not cover) or that offers no TLS: to the client the database
is unreachable. It is logged as an ERROR with a fixed reason, since retrying will not fix a
wrong `sslrootcert`, and a certificate that suddenly fails may be someone in the middle.

Insufficient privilege is a 403, not a 500: with row-level security it is how Postgres says
"this caller may not", the database deciding what the route let through; the route-level
checks (`shared._fastapi_app.UserSessionDep`) answer the same 403 earlier, and this one is the net
behind them, logged at INFO with the table so a missing grant can still be found.

A foreign-key violation is a 409, not a 422: a referenced row that does not exist, or a row
that is still referenced, is about the state of other rows, not the shape of the request, and
the same request can succeed once that state changes. A route that can name what is missing
should look it up first and raise `NotFoundError`.

Nothing is retried here. The mapping runs after the transaction has failed, and only the route
knows whether its work may run twice, so timeouts, serialization failures and deadlocks answer
503 with Retry-After and the client retries.

Logs: ERROR means a person must act (a 500: a bug or a misconfiguration), WARNING a transient
503, INFO input the database refused that the schemas let through. Responses and log lines
carry the error's class, SQLSTATE, constraint, column and table names and the innermost frame
of project code, never the error's message: driver messages quote row values, connection
errors quote the host.
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

__all__ = [
    "RETRY_AFTER_SECONDS",
    "TLS_NOT_VERIFIED",
    "AppError",
    "AuthConfigError",
    "CommitOutcomeUnknownError",
    "ConfigurationError",
    "ConflictError",
    "DatabaseConfigError",
    "DatabaseSecretNotSetError",
    "DatabaseUnavailableError",
    "ErrorResponse",
    "ForbiddenError",
    "InvalidTokenError",
    "NotAuthenticatedError",
    "NotFoundError",
    "ServiceUnavailableError",
    "SigningKeysUnavailableError",
    "error_response",
    "http_error",
    "invalid_request",
]

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


class AppError(Exception):
    """Base of the errors this application raises on purpose."""

    status_code = 500
    code = "internal_error"

    @property
    def headers(self) -> dict[str, str]:
        """Headers the response to this error carries (Retry-After is added for every 503)."""
        return {}


class NotAuthenticatedError(AppError):
    """No access token (or not a Bearer one): RFC 6750 asks for a bare `Bearer` challenge."""

    status_code = 401
    code = "not_authenticated"

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class InvalidTokenError(NotAuthenticatedError):
    """An access token that fails verification; the message says which check, never the token."""

    code = "invalid_token"

    @property
    def headers(self) -> dict[str, str]:
        # The message is ours (no quotes, no token), so it may go into the challenge as is.
        return {"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{self}"'}


class ForbiddenError(AppError):
    """A verified caller who may not do this."""

    status_code = 403
    code = "forbidden"


class NotFoundError(AppError):
    """The requested resource does not exist."""

    status_code = 404
    code = "not_found"


class ConflictError(AppError):
    """The request conflicts with data already stored."""

    status_code = 409
    code = "conflict"


class ConfigurationError(AppError):
    """A setting or secret is missing or malformed: a mistake to fix, not an outage.

    The client gets a generic 500; the log names `setting` (e.g. "DATABASE_URL") and the
    message, which must say what is wrong without ever quoting the value.
    """

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class DatabaseConfigError(ConfigurationError):
    """The database URL or secret is missing or malformed."""


class AuthConfigError(ConfigurationError):
    """SUPABASE_URL or the legacy JWT secret is missing or malformed."""


class ServiceUnavailableError(AppError):
    """A dependency is down or full; the client may retry."""

    status_code = 503
    code = "service_unavailable"


class DatabaseSecretNotSetError(ServiceUnavailableError):
    """The deployed secret still holds the stack's placeholder: `make secret` has not run."""


class DatabaseUnavailableError(ServiceUnavailableError):
    """A service the database depends on (Secrets Manager) is throttling or not answering."""


class SigningKeysUnavailableError(ServiceUnavailableError):
    """The keys that verify access tokens (the JWKS, the legacy JWT secret) cannot be read now.

    A 503, never a 401: the token may well be valid, and the client should retry.
    """

    def __init__(self) -> None:
        super().__init__("The keys that verify access tokens cannot be read, retry shortly")


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


@dataclass(frozen=True)
class _Answer:
    status_code: int
    code: str
    message: str


_INTERNAL = _Answer(500, AppError.code, "Internal server error")
_CONFLICT = _Answer(409, ConflictError.code, "The request conflicts with stored data")
_UNSTORABLE = _Answer(422, "validation_error", "The request holds a value that cannot be stored")
_NOT_ALLOWED = _Answer(403, ForbiddenError.code, "The access token may not do this")
_UNAVAILABLE = _Answer(
    503, ServiceUnavailableError.code, "The database is unavailable, retry shortly"
)
_TOO_SLOW = _Answer(
    503, ServiceUnavailableError.code, "The database did not answer in time, retry shortly"
)
_OUTCOME_UNKNOWN = _Answer(
    503,
    "commit_outcome_unknown",
    "The change may or may not have been stored: read it back before retrying",
)
_COLLIDED = _Answer(
    503, ServiceUnavailableError.code, "The request collided with another one, retry shortly"
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


def _response(answer: _Answer, headers: Mapping[str, str] | None = None) -> ErrorResponse:
    retry = {"Retry-After": str(RETRY_AFTER_SECONDS)} if answer.status_code == 503 else {}
    return ErrorResponse(
        answer.status_code,
        {"code": answer.code, "message": answer.message},
        {**retry, **(headers or {})},
    )


def error_response(exc: BaseException) -> ErrorResponse:
    """Map any exception to the response the client gets, and log it safely."""
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
        return _response(_Answer(exc.status_code, exc.code, str(exc)), exc.headers)
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
