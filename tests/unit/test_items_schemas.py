"""The items API's schemas and OpenAPI document say what the API accepts and answers."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from functions.items.handler import app, handler
from functions.items.schemas import WHITESPACE, ItemCreate, ItemUpdate
from tests.fixtures.lambda_events import LambdaTestContext, body_of, http_event

EVERY_CHARACTER = "".join(map(chr, range(0x110000)))


def refused(model: type[ItemCreate | ItemUpdate], body: dict[str, Any]) -> list[str]:
    """The fields pydantic names in its errors for the body; fails if it accepts the body."""
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    return [str(error["loc"][-1]) if error["loc"] else "" for error in caught.value.errors()]


def test_whitespace_class_is_exactly_what_strip_removes() -> None:
    stripped = {char for char in EVERY_CHARACTER if char.isspace()}

    assert set(re.findall(f"[{WHITESPACE}]", EVERY_CHARACTER)) == stripped


@pytest.mark.parametrize(
    "body",
    [
        {"sku": "N-1", "name": "a\u0000b"},
        {"sku": "N\u00001", "name": "ab"},
        {"sku": "N-1", "name": " \u3000\t"},
        {"sku": "N-1", "name": " " + "x" * 200},  # the limit counts the name as sent
        {"sku": "N-1", "name": "a\ud800b"},  # a lone surrogate: not UTF-8, not storable
    ],
)
def test_text_postgres_cannot_store_is_refused(body: dict[str, Any]) -> None:
    assert refused(ItemCreate, body)
    assert refused(ItemUpdate, body)


def test_names_are_stored_without_surrounding_whitespace() -> None:
    assert ItemCreate.model_validate({"sku": "N-1", "name": "  Blue mug\n"}).name == "Blue mug"


@pytest.mark.parametrize(("quantity", "accepted"), [(3.0, 3), (3.5, None), ("3", None)])
def test_quantity_is_an_integer_as_json_schema_counts_them(
    quantity: object, accepted: int | None
) -> None:
    body = {"sku": "N-1", "name": "x", "quantity": quantity}
    if accepted is None:
        assert refused(ItemCreate, body) == ["quantity"]
    else:
        assert ItemCreate.model_validate(body).quantity == accepted


@pytest.mark.parametrize("body", [{}, {"name": None}, {"quantity": None, "sku": "N-1"}])
def test_update_refuses_null_and_nothing(body: dict[str, Any]) -> None:
    assert refused(ItemUpdate, body)


def test_update_leaves_out_what_was_not_sent() -> None:
    assert ItemUpdate.model_validate({"quantity": 2}).model_dump() == {"quantity": 2}


def openapi() -> dict[str, Any]:
    document: dict[str, Any] = app.openapi()
    return document


def test_update_schema_has_no_null_and_needs_a_field() -> None:
    update = openapi()["components"]["schemas"]["ItemUpdate"]

    for field in update["properties"].values():
        assert field["type"] != "null"
        assert "anyOf" not in field
        assert "default" not in field
    assert update["minProperties"] == 1


@pytest.mark.parametrize(
    ("path", "method", "errors"),
    [
        ("/items", "post", {"400", "401", "403", "409", "422", "500", "503"}),
        ("/items", "get", {"401", "403", "422", "500", "503"}),
        ("/items/{item_id}", "get", {"401", "403", "404", "422", "500", "503"}),
        ("/items/{item_id}", "patch", {"400", "401", "403", "404", "409", "422", "500", "503"}),
        ("/items/{item_id}", "delete", {"401", "403", "404", "422", "500", "503"}),
    ],
)
def test_each_route_declares_its_errors_with_the_error_body(
    path: str, method: str, errors: set[str]
) -> None:
    responses = openapi()["paths"][path][method]["responses"]

    assert {status for status in responses if status.startswith(("4", "5"))} == errors
    for status in errors:
        schema = responses[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}
    assert "Retry-After" in responses["503"]["headers"]


def invoke(method: str, path: str) -> dict[str, Any]:
    event = http_event("GET /items/{item_id}", path=path)
    event["requestContext"]["http"]["method"] = method
    return handler(event, LambdaTestContext())


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/items", "GET, POST"),
        ("PUT", "/items", "GET, POST"),
        ("OPTIONS", "/items/1", "GET, PATCH, DELETE"),
        ("POST", "/items/1", "GET, PATCH, DELETE"),
    ],
)
def test_wrong_method_is_405_allowing_every_method_of_the_path(
    method: str, path: str, allow: str
) -> None:
    response = invoke(method, path)

    assert response["statusCode"] == 405
    assert response["headers"]["allow"] == allow
    assert body_of(response)["code"] == "method_not_allowed"


def test_the_document_is_not_served() -> None:
    assert invoke("GET", "/openapi.json")["statusCode"] == 404
