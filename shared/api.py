"""FastAPI glue shared by every FastAPI function: session dependencies and JSON errors.

Kept apart from `shared.errors` so that plain handlers never import FastAPI.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.async_sessions import get_async_read_session, get_async_session
from shared.errors import ErrorResponse, error_response, http_error, invalid_request

__all__ = ["ReadSessionDep", "SessionDep", "install_error_handlers"]

# scope="function": commit before the response is sent, so a failed commit is what the client
# sees, never a success response for data that was not stored.
SessionDep = Annotated[AsyncSession, Depends(get_async_session, scope="function")]
ReadSessionDep = Annotated[AsyncSession, Depends(get_async_read_session, scope="function")]


def _to_json(error: ErrorResponse) -> JSONResponse:
    return JSONResponse(error.body, status_code=error.status_code, headers=error.headers)


async def _on_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _to_json(invalid_request(exc.errors()))


async def _on_http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return _to_json(http_error(exc.status_code, str(exc.detail), exc.headers))


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
    """Make every error a JSON body in the shape `shared.errors` defines."""
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_middleware(_ErrorsAsJson)
