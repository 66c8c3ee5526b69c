"""Lambda proxy responses for the plain handlers (API Gateway HTTP API, payload v2.0)."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, TypedDict

from shared.deadline import deadline_for
from shared.errors import error_response

if TYPE_CHECKING:  # a Protocol, for type checking only: plain functions do not ship Mangum
    from mangum.types import LambdaContext

__all__ = ["LambdaEvent", "LambdaResponse", "json_errors", "json_response"]

type LambdaEvent = dict[str, Any]


class LambdaResponse(TypedDict):
    """The proxy integration's response: API Gateway turns it into the HTTP response."""

    statusCode: int
    headers: dict[str, str]
    body: str
    isBase64Encoded: bool


def json_response(
    status_code: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> LambdaResponse:
    """A JSON response with the given status."""
    return {
        "statusCode": status_code,
        "headers": {"content-type": "application/json", **(headers or {})},
        "body": json.dumps(body, separators=(",", ":"), default=str),
        "isBase64Encoded": False,
    }


type PlainHandler = Callable[[LambdaEvent, LambdaContext], LambdaResponse]


def json_errors(handler: PlainHandler) -> PlainHandler:
    """Turn any exception into the mapped JSON error, so the runtime never prints a trace."""

    @wraps(handler)
    def wrapper(event: LambdaEvent, context: LambdaContext) -> LambdaResponse:
        try:
            with deadline_for(context):
                return handler(event, context)
        except Exception as exc:  # the Lambda boundary: every error becomes a JSON response
            error = error_response(exc)
            return json_response(error.status_code, error.body, error.headers)

    return wrapper
