"""The Lambda boundary every function goes through, the only place that knows what an
invocation is.

Only HTTP events in AWS's documented shapes (API Gateway HTTP API payload 2.0 and 1.0, REST API,
function URLs) reach a handler; anything else is a 400, so a plain function never answers 200 to
an SQS message and Mangum never sees an event it would crash on. Whatever the handler raises
becomes the mapped JSON error: nothing raises to the runtime, which would log a traceback and
retry. Every invocation starts acting as `anon`, carries the request id in its logs but never the
event (it holds the bearer token), and answers `Cache-Control: no-store` unless the handler chose.
Every invocation is counted (`shared._metrics`): Requests by route and status class, Latency,
ColdStart, and what the engine and the error mapping record on the way, written as one batch of
EMF lines when it ends, whatever happened.
https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html
"""

from __future__ import annotations

import base64
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from functools import cache, wraps
from typing import Annotated, Any, Literal, NotRequired, TypedDict

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import AfterValidator, ConfigDict, TypeAdapter, ValidationError, with_config

from shared._deadline import deadline_for
from shared._error_mapping import error_response
from shared._errors import AppError
from shared._identity import ANONYMOUS, acting_as
from shared._logs import get_logger
from shared._metrics import function_name, invocation_metrics, record, route_of, status_class
from shared._secrets import prepare_reads
from shared._snapstart import register_hooks

logger = logging.getLogger(__name__)

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


class InvalidEventError(AppError):
    """The invocation's event is not an HTTP request this function accepts."""

    status_code = 400
    code = "invalid_event"


def _utf8(text: str) -> str:
    text.encode()  # a lone surrogate raises here, as it would in Mangum's encode()
    return text


# Text that becomes bytes of the ASGI scope: header names and values, query, cookies, body.
type _Text = Annotated[str, AfterValidator(_utf8)]


@with_config(ConfigDict(strict=True))
class _Http(TypedDict):
    method: str
    path: str
    sourceIp: str


@with_config(ConfigDict(strict=True))
class _RequestContextV2(TypedDict):
    http: _Http


@with_config(ConfigDict(strict=True))
class HttpEventV2(TypedDict):
    """API Gateway HTTP API payload 2.0, and Lambda function URLs (same payload)."""

    version: Literal["2.0"]
    requestContext: _RequestContextV2
    rawQueryString: NotRequired[_Text]
    headers: NotRequired[dict[_Text, _Text]]
    cookies: NotRequired[list[_Text]]
    body: NotRequired[_Text | None]
    isBase64Encoded: NotRequired[bool]


@with_config(ConfigDict(strict=True))
class _Identity(TypedDict):
    sourceIp: NotRequired[str | None]


@with_config(ConfigDict(strict=True))
class _RequestContextV1(TypedDict):
    identity: NotRequired[_Identity]


@with_config(ConfigDict(strict=True))
class HttpEventV1(TypedDict):
    """API Gateway REST API, and HTTP API payload 1.0 (which adds `version`)."""

    version: NotRequired[Literal["1.0"]]
    resource: NotRequired[str]
    httpMethod: str
    path: str
    requestContext: _RequestContextV1
    headers: NotRequired[dict[_Text, _Text] | None]
    multiValueHeaders: NotRequired[dict[_Text, list[_Text]] | None]
    queryStringParameters: NotRequired[dict[_Text, _Text] | None]
    multiValueQueryStringParameters: NotRequired[dict[_Text, list[_Text]] | None]
    body: NotRequired[_Text | None]
    isBase64Encoded: NotRequired[bool]


type _Kind = Literal["2.0", "1.0"]


@cache
def event_validator(kind: _Kind) -> TypeAdapter[Any]:
    """The validator of one payload version, built on first use: an HTTP API sends 2.0 only,
    so its functions never build the 1.0 validator (nor a REST API's the 2.0 one)."""
    return TypeAdapter(HttpEventV2 if kind == "2.0" else HttpEventV1)


def _event_kind(event: object) -> tuple[_Kind, LambdaEvent]:
    """Payload 2.0 (HTTP API, function URL) or 1.0 (REST API, HTTP API 1.0), as Mangum tells."""
    if isinstance(event, dict):
        if event.get("version") == "2.0":
            return "2.0", event
        context = event.get("requestContext")
        alb = isinstance(context, dict) and "elb" in context  # Mangum would take it for an ALB's
        if "httpMethod" in event and ("resource" in event or "version" in event) and not alb:
            return "1.0", event
    raise InvalidEventError("The event is not an HTTP request")


def _headers(event: LambdaEvent, kind: _Kind) -> dict[str, str]:
    """Lower-cased headers; payload 1.0 merges `multiValueHeaders` in, as Mangum does."""
    headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()}
    if kind == "1.0":
        for name, values in (event.get("multiValueHeaders") or {}).items():
            headers[name.lower()] = ", ".join(values)
    return headers


def request_header(event: LambdaEvent, name: str) -> str | None:
    """A header of an HTTP event the boundary accepted, by case-insensitive name."""
    kind, http_event = _event_kind(event)
    return _headers(http_event, kind).get(name.lower())


def _check_server(headers: Mapping[str, str]) -> None:
    """`host` as `name[:port]`, else `x-forwarded-port`, must give a numeric port."""
    host = headers.get("host", "")
    ports = host.split(":")[1:] if ":" in host else [headers.get("x-forwarded-port", "80")]
    if len(ports) != 1 or not ports[0].isdecimal():
        raise InvalidEventError("The request's host or port is malformed")


def check_http_event(event: object) -> LambdaEvent:
    """The event, if it is an HTTP request of a kind this boundary accepts; else a 400."""
    kind, http_event = _event_kind(event)
    try:
        event_validator(kind).validate_python(http_event)
    except ValidationError as exc:
        # The top-level field only: deeper parts of the location can be the caller's header names.
        location = exc.errors()[0]["loc"]
        field = location[0] if location else "event"
        raise InvalidEventError(f"The event's {field} is not valid for an HTTP request") from None
    _check_server(_headers(http_event, kind))
    if http_event.get("isBase64Encoded") and http_event.get("body"):
        try:
            base64.b64decode(http_event["body"], validate=True)
        except ValueError:  # binascii.Error, or text that is not ASCII
            raise InvalidEventError("The body is marked base64 but is not base64") from None
    return http_event


# The handler's context is `Any` because Mangum types it with a Protocol of its own, which
# Powertools' LambdaContext (read-only properties) does not satisfy for mypy.
type HttpHandler = Callable[[LambdaEvent, Any], Mapping[str, Any]]
type LambdaHandler = Callable[[Any, LambdaContext], dict[str, Any]]


NOT_STORED = {"cache-control": "no-store"}
"""Answers are per caller (and errors may be), so no browser or proxy cache may keep them."""


def _not_stored(response: Mapping[str, Any]) -> dict[str, Any]:
    """The response, with `Cache-Control: no-store` unless the handler chose its own caching."""
    single = {name.lower() for name in response.get("headers") or {}}
    multi = {name.lower() for name in response.get("multiValueHeaders") or {}}
    if "cache-control" in single | multi:
        return dict(response)
    return {**response, "headers": {**(response.get("headers") or {}), **NOT_STORED}}


def _error(exc: Exception) -> dict[str, Any]:
    error = error_response(exc)
    return _not_stored(json_response(error.status_code, error.body, error.headers))


def _never_cached(handler: HttpHandler) -> HttpHandler:
    @wraps(handler)
    def not_stored(event: LambdaEvent, context: Any) -> dict[str, Any]:
        return _not_stored(handler(event, context))

    return not_stored


def lambda_boundary(handler: HttpHandler) -> LambdaHandler:
    """Wrap a Lambda handler: request id in the logs, HTTP events only, JSON errors only, and
    no answer cached.

    Wrapping a handler is what makes a module a Lambda function, so this, not importing the
    platform, registers the SnapStart hooks (where the runtime has them) and loads what the
    first request would otherwise pay for while Lambda initialises the function.
    """
    register_hooks()
    prepare_reads()
    signing_keys = sys.modules.get("shared._signing_keys")  # only where tokens are verified
    if signing_keys is not None:
        signing_keys.prepare_fetches()
    handler = _never_cached(handler)

    # log_event=False whatever POWERTOOLS_LOGGER_LOG_EVENT says: an event holds the caller's
    # bearer token and request body, which no log line may carry.
    @get_logger().inject_lambda_context(
        correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False
    )
    @wraps(handler)
    def boundary(event: Any, context: LambdaContext) -> dict[str, Any]:
        started = time.perf_counter()
        route = route_of(event)
        with invocation_metrics(function_name(context)):
            response = _answer(handler, event, context)
            record("Requests", 1, route=route, status_class=status_class(response["statusCode"]))
            record("Latency", (time.perf_counter() - started) * 1000, route=route)
        return response

    return boundary


def _answer(handler: HttpHandler, event: Any, context: LambdaContext) -> dict[str, Any]:
    """The handler's answer to an HTTP event, or the JSON error for whatever went wrong."""
    try:
        http_event = check_http_event(event)
    except InvalidEventError as exc:
        logger.warning("invalid event", extra={"reason": str(exc)})
        return _error(exc)
    # Every invocation starts as `anon`, whatever a previous invocation left in this context:
    # only a verified token, in the session dependencies or the handler, puts a caller's
    # identity in scope. Errors are mapped inside the deadline, which decides their cause.
    with deadline_for(context), acting_as(ANONYMOUS):
        try:
            return dict(handler(http_event, context))
        except Exception as exc:  # the Lambda boundary: every error becomes a JSON response
            return _error(exc)
