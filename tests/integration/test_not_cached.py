"""Every answer says `Cache-Control: no-store`: a caller's items, the connection report, their
errors (a cache keyed without the Authorization header would hand them to the next caller),
and the health check, whose cached 200 would hide an outage."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from functions.connections.handler import handler as connections_handler
from functions.health.handler import handler as health_handler
from functions.items.handler import handler as items_handler
from shared._boundary import LambdaHandler, json_response, lambda_boundary
from tests.fixtures.lambda_events import LambdaTestContext, http_event, rest_event
from tests.fixtures.tokens import Tokens


def answer(handler: LambdaHandler, event: Any) -> dict[str, Any]:
    return handler(event, LambdaTestContext())


def cache_control(response: dict[str, Any]) -> str | None:
    headers = {name.lower(): value for name, value in (response.get("headers") or {}).items()}
    return headers.get("cache-control")


def new_item() -> dict[str, Any]:
    return http_event("POST /items", body={"sku": f"N-{uuid.uuid4().hex[:8]}", "name": "n"})


@pytest.mark.usefixtures("as_user")
@pytest.mark.parametrize(
    ("event", "status"),
    [
        (lambda: http_event("GET /items"), 200),
        (new_item, 201),
        (lambda: http_event("GET /items/{item_id}", path="/items/1"), 404),
        (lambda: http_event("POST /items", body={"sku": "no spaces"}), 422),
        (lambda: http_event("GET /items", token=""), 401),
        (lambda: http_event("GET /items", token="not-a-jwt"), 401),
        (lambda: rest_event("GET", "/items"), 200),  # payload 1.0: headers and multiValueHeaders
        (lambda: {"Records": []}, 400),  # not an HTTP event: the boundary's own error
    ],
    ids=["list", "create", "not-found", "invalid", "no-token", "bad-token", "rest", "sqs"],
)
def test_items_answers_are_not_stored(event: Any, status: int) -> None:
    response = answer(items_handler, event())

    assert response["statusCode"] == status, response
    assert cache_control(response) == "no-store"


@pytest.mark.parametrize(
    ("token", "status"),
    [("service_role", 200), ("authenticated", 403), (None, 401)],
)
def test_connections_answers_are_not_stored(token: str | None, status: int, tokens: Tokens) -> None:
    bearer = "" if token is None else tokens.token(role=token)

    response = answer(connections_handler, http_event("GET /connections", token=bearer))

    assert response["statusCode"] == status, response
    assert cache_control(response) == "no-store"


def test_the_health_check_is_not_stored() -> None:
    response = answer(health_handler, http_event("GET /health"))

    assert response["statusCode"] == 200, response
    assert cache_control(response) == "no-store"


def test_a_handler_may_choose_its_own_caching() -> None:
    """The boundary adds no-store only where the answer says nothing about caching."""
    handler = lambda_boundary(
        lambda _event, _context: json_response(200, {}, {"Cache-Control": "max-age=60"})
    )
    response = answer(handler, http_event("GET /health"))

    assert response["headers"] == {
        "content-type": "application/json",
        "Cache-Control": "max-age=60",
    }
