"""FastAPI glue shared by every FastAPI function: identity and session dependencies, JSON errors.

Each route says who it acts as by the dependency it takes:

- `PublicReadSessionDep`: public routes, no token asked for; reads as `anon`, which row-level
  security and grants keep out of every user's rows (a public catalogue, a status page);
- `ReadSessionDep` / `SessionDep`: a signed-in user's routes; a 401 without a valid access
  token, then reads (or writes) as that user, so policies decide which rows are theirs;
- `ServiceRoleDep`: service-only routes; 401 without a valid token, 403 for any token but a
  service_role one (open a session with `async_session_scope(identity)` to act as it).

Kept apart from `shared._errors` so that plain handlers never import FastAPI. `ErrorBody` and
`error_responses` put the errors a route can answer into the app's OpenAPI document, so the
document says what the API really answers (the tests check it with schemathesis).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import MISSING, BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared._errors import ErrorResponse, error_response, http_error, invalid_request
from shared._sessions import async_read_session, async_session_scope
from shared._tokens import (
    ANONYMOUS,
    Identity,
    identity_from_authorization,
    service_role_only,
    user_only,
)

__all__ = [
    "ErrorBody",
    "ErrorDetail",
    "IdentityDep",
    "PublicReadSessionDep",
    "ReadSessionDep",
    "ServiceRoleDep",
    "SessionDep",
    "UserDep",
    "UserReadSessionDep",
    "UserSessionDep",
    "error_responses",
    "install_error_handlers",
]


# Declares the scheme in the OpenAPI document; the header itself is read as it was sent, so
# that a missing token and a non-Bearer one get the same answer as in plain handlers.
_bearer = HTTPBearer(auto_error=False, description="A Supabase Auth access token")


async def get_identity(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Identity:
    """The verified caller: a 401 without a valid Supabase access token.

    `async`: verification is CPU only, except for a JWKS fetch every few minutes per instance
    (bounded by the request's deadline), so it runs on the loop without a threadpool hop.
    """
    return identity_from_authorization(request.headers.get("authorization"))


async def get_service_role(identity: Annotated[Identity, Depends(get_identity)]) -> Identity:
    """The verified caller, who must hold a service_role token: 401 without one, 403 for others."""
    return service_role_only(identity)


IdentityDep = Annotated[Identity, Depends(get_identity)]
ServiceRoleDep = Annotated[Identity, Depends(get_service_role)]


async def get_session(identity: IdentityDep) -> AsyncIterator[AsyncSession]:
    """A read-write unit of work as the verified caller: every transaction switches to the
    caller's role and claims, so row-level security decides what it sees and changes."""
    async with async_session_scope(identity) as session:
        yield session


async def get_read_session(identity: IdentityDep) -> AsyncIterator[AsyncSession]:
    """A read-only session in autocommit as the verified caller."""
    async with async_read_session(identity) as session:
        yield session


async def get_public_read_session() -> AsyncIterator[AsyncSession]:
    """A read-only session in autocommit as `anon`: no token is read, so none is required."""
    async with async_read_session(ANONYMOUS) as session:
        yield session


# scope="function": commit before the response is sent, so a failed commit is what the client
# sees, never a success response for data that was not stored. Both take the caller's token:
# a request without a valid one is a 401 before any database work.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]
PublicReadSessionDep = Annotated[AsyncSession, Depends(get_public_read_session, scope="function")]


async def get_user(identity: IdentityDep) -> Identity:
    """The verified caller, who must name a user (`sub`): 401 without a valid token, 403 for an
    anon token and for a service_role token that names nobody."""
    return user_only(identity)


UserDep = Annotated[Identity, Depends(get_user)]


async def get_user_session(identity: UserDep) -> AsyncIterator[AsyncSession]:
    """`get_session` for routes whose rows belong to users: the caller must name one."""
    async with async_session_scope(identity) as session:
        yield session


async def get_user_read_session(identity: UserDep) -> AsyncIterator[AsyncSession]:
    """`get_read_session` for routes whose rows belong to users: the caller must name one."""
    async with async_read_session(identity) as session:
        yield session


# For per-user resources: a 403 with a clear message, before any database work, where the
# database would refuse anon's statements (no grant) or store a row with no owner.
UserSessionDep = Annotated[AsyncSession, Depends(get_user_session, scope="function")]
UserReadSessionDep = Annotated[AsyncSession, Depends(get_user_read_session, scope="function")]


class ErrorDetail(BaseModel):
    """One invalid part of a request: where it is, what is wrong, pydantic's error type."""

    loc: list[str | int]
    message: str
    type: str


class ErrorBody(BaseModel):
    """Every error's JSON body; `details` only on a 422 from the request's validation."""

    code: str
    message: str
    details: list[ErrorDetail] | MISSING = MISSING


_ERROR_DESCRIPTIONS = {
    400: "The body is not JSON",
    401: "No valid access token: missing, malformed, expired, wrongly signed or for another API",
    403: "The access token may not do this",
    404: "No such resource",
    409: "Conflicts with stored data",
    422: "Invalid request",
    500: "Internal error (logged)",
    503: "The database is unavailable, full or too slow: retry after `Retry-After` seconds",
}


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the errors a route can answer, every one with `ErrorBody`."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status_code in status_codes:
        response: dict[str, Any] = {
            "model": ErrorBody,
            "description": _ERROR_DESCRIPTIONS[status_code],
        }
        if status_code == 503:
            response["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait before retrying",
                    "schema": {"type": "integer", "minimum": 1},
                }
            }
        if status_code == 401:
            response["headers"] = {
                "WWW-Authenticate": {
                    "description": 'The challenge: `Bearer`, or `Bearer error="invalid_token"`',
                    "schema": {"type": "string"},
                }
            }
        responses[status_code] = response
    return responses


def _to_json(error: ErrorResponse) -> JSONResponse:
    return JSONResponse(error.body, status_code=error.status_code, headers=error.headers)


async def _on_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _to_json(invalid_request(exc.errors()))


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")


def _allowed_methods(request: Request) -> str:
    """Every method some route answers on the request's path, asked of the routes themselves."""
    allowed = [
        method
        for method in _METHODS
        if any(
            route.matches({**_routing_scope(request.scope), "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    ]
    return ", ".join(allowed)


def _routing_scope(scope: Scope) -> Scope:
    """The parts of a request that routing looks at, free of what the first match left in it."""
    return {
        "type": "http",
        "path": scope["path"],
        "root_path": scope.get("root_path", ""),
        "headers": [],
        "query_string": b"",
    }


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # Starlette's Allow names the methods of the first route on the path only.
        headers["Allow"] = _allowed_methods(request)
    return _to_json(http_error(exc.status_code, str(exc.detail), headers))


class _ErrorsAsJson:
    """Answer every other exception with its mapped JSON error.

    Starlette sends unhandled exceptions to its outermost middleware, which re-raises them
    after responding, and Mangum then logs a full stack trace; this stops them one layer in.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # the application boundary: every error becomes JSON
            response = _to_json(error_response(exc))
            if not started:
                await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Make every error a JSON body in the shape `shared._errors` defines."""
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_middleware(_ErrorsAsJson)
