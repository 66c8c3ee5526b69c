"""Every function behind the one Lambda boundary: HTTP events answered in their own shape,
anything else a 400 in the JSON error shape, and nothing raised, logged at ERROR or printed
as a traceback, whatever the event.

The examples name each case the boundary exists for; the property-based test then throws
1,000 generated events per function at it, valid and malformed, against the real pooler.
"""

from __future__ import annotations

import copy
import io
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from infra.serverless_config import Route
from tests.fixtures.lambda_events import (
    FunctionOutput,
    LambdaTestContext,
    authorized,
    body_of,
    fill_path,
    function_url_event,
    http_event,
    path_parameter_names,
    rest_event,
    stored_event,
)
from tests.fixtures.service import (
    FUNCTIONS,
    HTTP_FUNCTIONS,
    ROUTES,
    handler_of,
    read_route,
    uses_fastapi,
)
from tests.fixtures.tokens import Tokens

pytestmark = pytest.mark.usefixtures("as_user")  # items are a user's own rows

type Handler = Callable[[Any, LambdaTestContext], dict[str, Any]]

HANDLERS: dict[str, Handler] = {
    name: handler_of(function) for name, function in HTTP_FUNCTIONS.items()
}
# What a function may answer, from the README; a 500 is never right for a request. FastAPI
# also answers unknown paths and methods (404, 405) and a trailing slash (307, to the path
# without it).
# A route that takes a token answers 401 without one, a service-role route 403 to a user.
PLAIN_STATUSES = {200, 400, 401, 403, 503}
FASTAPI_STATUSES = {200, 201, 204, 307, 400, 401, 404, 405, 409, 422, 503}
# A path parameter no stored row has: reads answer without touching other tests' data.
NO_SUCH_ROW = "987654321"
TRACEBACK_MARKS = ("Traceback", "--- Logging error ---")


def documented_statuses(function: str) -> set[int]:
    return FASTAPI_STATUSES if uses_fastapi(FUNCTIONS[function]) else PLAIN_STATUSES


def v2_route(function: str) -> tuple[Route, str]:
    """The function's read route, and its path with the parameters filled in."""
    route = read_route(FUNCTIONS[function])
    return route, fill_path(route, dict.fromkeys(path_parameter_names(route), NO_SUCH_ROW))


@pytest.fixture(autouse=True)
def _tokens_verified_against_a_real_jwks(tokens: Tokens) -> Tokens:
    """SUPABASE_URL set for every test here: a bearer token in an event is verified, not a
    configuration error."""
    return tokens


def v2_event(function: str) -> dict[str, Any]:
    route, path = v2_route(function)
    return http_event(route, path)


def malformed(function: str) -> dict[str, Any]:
    """The cases that escaped the handlers or answered wrongly before the boundary."""
    event = v2_event(function)
    no_http = copy.deepcopy(event)
    del no_http["requestContext"]["http"]
    null_headers = {**copy.deepcopy(event), "headers": None}
    cookies = {**copy.deepcopy(event), "cookies": [1, {"a": "b"}]}
    method = copy.deepcopy(event)
    method["requestContext"]["http"]["method"] = 7
    base64_body = {**copy.deepcopy(event), "isBase64Encoded": True, "body": "not base64 !"}
    surrogate_header = copy.deepcopy(event)
    surrogate_header["headers"]["x-name"] = "a\ud800b"
    route, path = v2_route(function)
    rest_without_identity = rest_event("GET", path, resource=route.path)
    rest_without_identity["requestContext"]["identity"] = None
    host = copy.deepcopy(event)
    host["headers"]["host"] = "[::1]:443"
    return {
        "empty": {},
        "null": None,
        "list": [event],
        "sqs": stored_event("sqs"),
        "s3": stored_event("s3"),
        "no-requestContext.http": no_http,
        "headers-null": null_headers,
        "cookies-not-strings": cookies,
        "method-not-a-string": method,
        "base64-body-not-base64": base64_body,
        "header-not-utf8": surrogate_header,
        "rest-identity-null": rest_without_identity,
        "host-with-two-colons": host,
    }


CASES = [(function, case) for function in HANDLERS for case in malformed(function)]


@pytest.fixture
def quiet_check(
    function_output: FunctionOutput, caplog: pytest.LogCaptureFixture
) -> Callable[[], tuple[str, list[logging.LogRecord]]]:
    """What an invocation printed and logged, from the start of the test or the last call."""
    caplog.set_level(logging.INFO)

    def take() -> tuple[str, list[logging.LogRecord]]:
        output = function_output.read()
        records = list(caplog.records)
        caplog.clear()
        return output, records

    return take


def assert_json_error(response: dict[str, Any], status: int) -> dict[str, Any]:
    assert response["statusCode"] == status
    assert response["headers"]["content-type"] == "application/json"
    body: dict[str, Any] = body_of(response)
    assert isinstance(body["code"], str)
    assert isinstance(body["message"], str)
    return body


@pytest.mark.parametrize(("function", "case"), CASES)
def test_non_http_or_malformed_event_is_400_logged_once_as_a_warning(
    function: str,
    case: str,
    quiet_check: Callable[[], tuple[str, list[logging.LogRecord]]],
) -> None:
    response = HANDLERS[function](malformed(function)[case], LambdaTestContext())
    output, records = quiet_check()

    assert assert_json_error(response, 400)["code"] == "invalid_event"
    assert [(r.name, r.levelname) for r in records] == [("shared._boundary", "WARNING")]
    assert records[0].exc_info is None
    assert not any(mark in output for mark in TRACEBACK_MARKS)


def rest_v1(function: str) -> dict[str, Any]:
    route, path = v2_route(function)
    return rest_event(route.method, path, resource=route.path)


def function_url(function: str) -> dict[str, Any]:
    route, path = v2_route(function)
    return function_url_event(route.method, path)


KINDS: dict[str, Callable[[str], dict[str, Any]]] = {
    "http-api-v2": v2_event,
    "rest-v1": rest_v1,
    "function-url": function_url,
}
# What each integration reads from the response; `multiValueHeaders` and `cookies` optional.
RESPONSE_KEYS = {"statusCode", "headers", "body", "isBase64Encoded"}
OPTIONAL_KEYS = {"rest-v1": {"multiValueHeaders"}, "http-api-v2": {"cookies"}}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("function", HANDLERS)
def test_each_function_answers_each_kind_of_http_event_in_its_shape(
    function: str, kind: str, tokens: Tokens
) -> None:
    # A service_role token: every function answers its read, /connections included.
    token = tokens.service_role()
    reference = HANDLERS[function](authorized(v2_event(function), token), LambdaTestContext())

    response = HANDLERS[function](authorized(KINDS[kind](function), token), LambdaTestContext())

    assert reference["statusCode"] < 500
    assert response["statusCode"] == reference["statusCode"]
    assert RESPONSE_KEYS <= response.keys() <= RESPONSE_KEYS | OPTIONAL_KEYS.get(kind, set())
    assert all(isinstance(v, str) for v in response["headers"].values())
    assert isinstance(body_of(response), dict)
    assert response["isBase64Encoded"] is False


@pytest.mark.parametrize(
    "function", [name for name, function in FUNCTIONS.items() if uses_fastapi(function)]
)
def test_access_log_survives_a_path_with_a_lone_surrogate(
    function: str, quiet_check: Callable[[], tuple[str, list[logging.LogRecord]]]
) -> None:
    route, path = v2_route(function)
    path += "/\ud800"

    response = HANDLERS[function](http_event(route, path), LambdaTestContext())
    output, records = quiet_check()

    status = response["statusCode"]
    # On a failure, what the error mapping logged (the error's name and where it was raised).
    logged_errors = [
        (getattr(r, "error", None), getattr(r, "raised_at", None), getattr(r, "sqlstate", None))
        for r in records
        if r.levelno >= logging.ERROR
    ]
    assert status in documented_statuses(function), logged_errors
    assert_json_error(response, status)
    assert not any(mark in output for mark in TRACEBACK_MARKS)
    assert [r for r in records if r.levelno >= logging.ERROR] == []
    [access_line] = [line for line in output.splitlines() if '"name":"mangum.http"' in line]
    assert json.loads(access_line)["message"] == f"GET {path} {status}"


def test_control_powertools_default_json_cannot_write_a_lone_surrogate(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The failure the ASCII JSON lines prevent, on the same strict UTF-8 stream."""
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LambdaPowertoolsFormatter())
    control = logging.getLogger("tests.control.surrogate")
    control.propagate = False
    control.addHandler(handler)
    try:
        control.warning("GET %s 422", "/any/\ud800")
    finally:
        control.removeHandler(handler)

    assert "--- Logging error ---" in capfd.readouterr().err


# --- property-based: generated events, valid and malformed ---------------------------------

# Text as a JSON event may hold it: any code point, lone surrogates included. NUL stays out of
# bodies: Postgres cannot store it, and rejecting it with 422 is the schemas' job
# (tests/unit/test_items_schemas.py).
any_text = st.text(st.characters(exclude_categories=()), max_size=12)
body_text = st.text(st.characters(exclude_categories=(), exclude_characters="\x00"), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=6,
)
bodies = st.one_of(
    st.none(),
    st.dictionaries(body_text, json_values, max_size=3).map(json.dumps),
    body_text,
)
# Path parameters: ids no other test holds, or any text.
parameter_values = st.integers(10**12, 2**64).map(str) | any_text
methods = st.one_of(st.sampled_from(["GET", "POST", "PATCH", "DELETE", "PUT", "HEAD"]), any_text)


def _on(route: Route) -> st.SearchStrategy[tuple[str, str, str | None]]:
    """Requests on a declared route: its method, its path with any parameter values."""
    values = st.fixed_dictionaries(dict.fromkeys(path_parameter_names(route), parameter_values))
    return st.tuples(st.just(route.method), values.map(lambda v: fill_path(route, v)), bodies)


declared_paths = st.sampled_from(sorted(ROUTES, key=lambda route: route.key)).map(fill_path)
# Half the requests are routes of serverless.yml; the other half any method on any path
# (a declared one with a trailing slash among them), with any body.
requests = st.one_of(
    st.sampled_from(sorted(ROUTES, key=lambda route: route.key)).flatmap(_on),
    st.tuples(methods, st.one_of(any_text, declared_paths.map(lambda p: p + "/")), bodies),
)


def _containers(value: Any) -> list[dict[str, Any] | list[Any]]:
    found: list[dict[str, Any] | list[Any]] = []
    if isinstance(value, dict | list):
        found.append(value)
        for child in value.values() if isinstance(value, dict) else value:
            found.extend(_containers(child))
    return found


@st.composite
def request_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event of one of the three kinds, for any method, path and body."""
    method, path, body = draw(requests)
    kind = draw(st.sampled_from(["http-api-v2", "rest-v1", "function-url"]))
    if kind == "rest-v1":
        event = rest_event(method, path)
    elif kind == "function-url":
        event = function_url_event(method, path)
    else:
        event = http_event(next(iter(ROUTES)))
        event["requestContext"]["http"]["method"] = method
        event["rawPath"] = event["requestContext"]["http"]["path"] = path
    if body is not None:
        event["body"] = body
        event["headers"]["content-type"] = "application/json"
    return event


@st.composite
def mutated_events(draw: st.DrawFn) -> Any:
    """A valid event with up to three keys anywhere in it deleted or replaced by any JSON."""
    event = draw(request_events())
    for _ in range(draw(st.integers(1, 3))):
        container = draw(st.sampled_from(_containers(event)))
        if not container:
            continue
        if isinstance(container, dict):
            key: Any = draw(st.sampled_from(sorted(container)))
        else:
            key = draw(st.integers(0, len(container) - 1))
        if draw(st.booleans()):
            del container[key]
        else:
            container[key] = draw(json_values)
    return event


@st.composite
def envelope_edge_cases(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with one field the adapters read set to a value chosen to hurt."""
    event = draw(request_events())
    v2 = "version" in event
    field = draw(
        st.sampled_from(
            ["headers", "cookies", "base64", "host", "port", "query", "multi"]
            if v2
            else ["headers", "base64", "host", "port", "query", "multi"]
        )
    )
    if field == "headers":
        event["headers"] = draw(st.none() | st.dictionaries(any_text, any_text, max_size=3))
    elif field == "cookies":
        event["cookies"] = draw(st.lists(any_text | json_values, max_size=3))
    elif field == "base64":
        event["isBase64Encoded"] = True
        event["body"] = draw(any_text | st.binary(max_size=12).map(_b64))
    elif field in ("host", "port"):
        event["headers"]["host" if field == "host" else "x-forwarded-port"] = draw(any_text)
    elif field == "query":
        if v2:
            event["rawQueryString"] = draw(any_text)
        else:
            event["queryStringParameters"] = draw(st.dictionaries(any_text, any_text, max_size=2))
    else:
        event["multiValueHeaders"] = draw(st.dictionaries(any_text, json_values, max_size=2))
    return event


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


not_http = st.one_of(
    json_values,
    st.sampled_from(["sqs", "s3"]).map(stored_event),
    st.just({}),
)
lambda_events = st.one_of(request_events(), mutated_events(), envelope_edge_cases(), not_http)


@pytest.mark.parametrize("function", HANDLERS)
@settings(
    max_examples=1_000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(lambda_event=lambda_events)
def test_any_event_gets_a_documented_answer_and_no_traceback(
    function: str,
    lambda_event: Any,
    quiet_check: Callable[[], tuple[str, list[logging.LogRecord]]],
) -> None:
    response = HANDLERS[function](lambda_event, LambdaTestContext())  # raising fails the test
    output, records = quiet_check()

    status = response["statusCode"]
    event(f"status {status}")  # pytest --hypothesis-show-statistics shows the mix
    assert status in documented_statuses(function)
    if status >= 400:
        assert_json_error(response, status)
    assert [r for r in records if r.levelno >= logging.ERROR or r.exc_info] == []
    assert not any(mark in output for mark in TRACEBACK_MARKS)
