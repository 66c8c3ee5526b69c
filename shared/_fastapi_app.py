"""The FastAPI side of a function: the app factory, its JSON error handlers, the Lambda handler.

Every error answers in the shape `shared._error_mapping` defines; `error_responses` puts the errors
a route can answer into the OpenAPI document, so it says what the API really answers. Kept apart
from the plain handlers' modules, so that they never import FastAPI or Mangum.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from mangum import Mangum
from pydantic import MISSING, BaseModel
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared._boundary import LambdaHandler, lambda_boundary
from shared._error_mapping import ErrorResponse, error_response, http_error, invalid_request


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


def create_app(*routers: APIRouter, title: str) -> FastAPI:
    """A FastAPI app serving `routers`, every error answered as JSON.

    No docs or OpenAPI routes: API Gateway routes only what serverless.yml declares, so they
    could not be reached.
    """
    app = FastAPI(title=title, openapi_url=None, docs_url=None, redoc_url=None)
    for router in routers:
        app.include_router(router)
    install_error_handlers(app)
    return app


def lambda_handler(app: FastAPI) -> LambdaHandler:
    """The Lambda handler serving `app`: Mangum behind the boundary.

    `lifespan="off"`: Mangum would otherwise run the ASGI lifespan on every invocation.
    """
    return lambda_boundary(Mangum(app, lifespan="off"))
