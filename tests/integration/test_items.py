"""The items function, invoked as Lambda invokes it, against Postgres through the pooler."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from functions.items.handler import handler
from functions.items.models import Item
from shared._engine import autocommit_connection
from shared._identity import acting_as_login_role
from shared._tokens import NEEDS_USER
from tests.fixtures.lambda_events import (
    LambdaTestContext,
    body_of,
    function_url_event,
    http_event,
    rest_event,
)
from tests.fixtures.tokens import Tokens

pytestmark = pytest.mark.usefixtures("as_user")  # items are a user's own rows


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    return handler(event, LambdaTestContext())


def new_sku() -> str:
    return f"SKU-{uuid.uuid4().hex[:12]}"


def item_count() -> int:
    with autocommit_connection() as conn:
        return conn.execute(select(func.count()).select_from(Item)).scalar_one()


def database_now() -> datetime:
    """The database's clock, in a transaction of its own."""
    with autocommit_connection() as conn:
        return conn.execute(select(func.now())).scalar_one()


def timestamp(value: str) -> datetime:
    return datetime.fromisoformat(value)


def create(sku: str, name: str = "Blue mug", quantity: int = 3) -> dict[str, Any]:
    response = invoke(
        http_event("POST /items", body={"sku": sku, "name": name, "quantity": quantity})
    )
    assert response["statusCode"] == 201, response
    created: dict[str, Any] = body_of(response)
    return created


def test_create_read_update_delete_round_trip() -> None:
    sku = new_sku()
    created = create(sku)
    item_path = f"/items/{created['id']}"

    read = invoke(http_event("GET /items/{item_id}", path=item_path))
    between = database_now()
    updated = invoke(http_event("PATCH /items/{item_id}", path=item_path, body={"quantity": 9}))
    deleted = invoke(http_event("DELETE /items/{item_id}", path=item_path))
    gone = invoke(http_event("GET /items/{item_id}", path=item_path))

    assert created["sku"] == sku
    assert created["quantity"] == 3
    assert created["created_at"]
    assert body_of(read) == created
    assert body_of(updated)["quantity"] == 9
    # The update stamps the time of its own transaction, after the read and after `between`.
    assert timestamp(created["updated_at"]) < between <= timestamp(body_of(updated)["updated_at"])
    assert deleted["statusCode"] == 204
    assert gone["statusCode"] == 404
    assert body_of(gone) == {"code": "not_found", "message": f"Item {created['id']} not found"}


def test_duplicate_sku_is_409_and_writes_nothing() -> None:
    sku = new_sku()
    create(sku)
    before = item_count()

    response = invoke(http_event("POST /items", body={"sku": sku, "name": "Other"}))

    assert response["statusCode"] == 409
    assert body_of(response)["code"] == "conflict"
    assert item_count() == before


def test_update_to_a_taken_sku_is_409_and_changes_nothing() -> None:
    first, second = create(new_sku()), create(new_sku())

    response = invoke(
        http_event(
            "PATCH /items/{item_id}", path=f"/items/{second['id']}", body={"sku": first["sku"]}
        )
    )
    unchanged = body_of(invoke(http_event("GET /items/{item_id}", path=f"/items/{second['id']}")))

    assert response["statusCode"] == 409
    assert unchanged == second


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"sku": "ok-1", "name": "x", "quantity": "3"}, "quantity"),  # string, not integer
        ({"sku": "ok-1", "name": "x", "quantity": -1}, "quantity"),
        ({"sku": "ok-1", "name": "x", "quantity": 2**31}, "quantity"),
        ({"sku": "has space", "name": "x"}, "sku"),
        ({"sku": "ok-1", "name": ""}, "name"),
        ({"sku": "ok-1", "name": "x" * 201}, "name"),
        ({"name": "x"}, "sku"),
        ({"sku": "ok-1", "name": "x", "price": 3}, "price"),
    ],
)
def test_invalid_create_is_422_and_writes_nothing(body: dict[str, Any], field: str) -> None:
    before = item_count()

    response = invoke(http_event("POST /items", body=body))

    assert response["statusCode"] == 422
    error = body_of(response)
    assert error["code"] == "validation_error"
    assert [detail["loc"][-1] for detail in error["details"]] == [field]
    assert item_count() == before


@pytest.mark.parametrize("raw_body", ['{"sku": "x",', "not json", "[1, 2"])
def test_malformed_json_is_400_and_writes_nothing(raw_body: str) -> None:
    before = item_count()

    response = invoke(http_event("POST /items", raw_body=raw_body))

    assert response["statusCode"] == 400
    assert body_of(response)["code"] == "malformed_json"
    assert item_count() == before


@pytest.mark.parametrize("body", [{}, {"name": None}, {"quantity": "5"}, {"color": "red"}])
def test_invalid_update_is_422_and_changes_nothing(body: dict[str, Any]) -> None:
    created = create(new_sku())

    response = invoke(
        http_event("PATCH /items/{item_id}", path=f"/items/{created['id']}", body=body)
    )
    unchanged = body_of(invoke(http_event("GET /items/{item_id}", path=f"/items/{created['id']}")))

    assert response["statusCode"] == 422
    assert unchanged == created


@pytest.mark.parametrize("path", ["/items/0", "/items/abc", "/items/99999999999999999999"])
def test_invalid_item_id_is_422(path: str) -> None:
    response = invoke(http_event("GET /items/{item_id}", path=path))

    assert response["statusCode"] == 422
    assert body_of(response)["code"] == "validation_error"


@pytest.mark.parametrize("route", ["PATCH /items/{item_id}", "DELETE /items/{item_id}"])
def test_missing_item_is_404(route: str) -> None:
    body = {"quantity": 1} if route.startswith("PATCH") else None
    response = invoke(http_event(route, path="/items/987654321", body=body))

    assert response["statusCode"] == 404


def test_pages_walk_the_items_in_id_order() -> None:
    created = [create(new_sku(), name=f"page item {n}") for n in range(5)]
    after = created[0]["id"] - 1

    pages = []
    for _ in range(3):
        page = body_of(invoke(http_event("GET /items", query=f"limit=2&after={after}")))
        pages.append([item["id"] for item in page["items"]])
        after = page["next_after"]

    ids = [item["id"] for item in created]
    assert pages == [ids[0:2], ids[2:4], ids[4:5]]
    assert after is None


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=ten", "after=-1"])
def test_page_bounds_are_enforced(query: str) -> None:
    response = invoke(http_event("GET /items", query=query))

    assert response["statusCode"] == 422
    assert body_of(response)["code"] == "validation_error"


def test_unknown_route_is_json_404() -> None:
    event = http_event("GET /items", path="/nothing-here")

    response = invoke(event)

    assert response["statusCode"] == 404
    assert body_of(response)["code"] == "not_found"


def test_round_trip_through_rest_and_function_url_events() -> None:
    body = {"sku": new_sku(), "name": "Through v1"}
    created = invoke(rest_event("POST", "/items", body=body))
    path = f"/items/{body_of(created)['id']}"
    read = invoke(function_url_event("GET", path))
    deleted = invoke(rest_event("DELETE", path, resource="/items/{item_id}"))

    assert created["statusCode"] == 201
    assert body_of(read)["sku"] == body["sku"]
    assert deleted["statusCode"] == 204


@pytest.mark.parametrize(
    ("route", "event"),
    [("POST /items", {"body": {"sku": "no-one-1", "name": "x"}}), ("GET /items", {})],
)
def test_without_a_token_items_answer_401_and_touch_no_row(
    route: str, event: dict[str, Any]
) -> None:
    with acting_as_login_role():  # the tables' owner counts every user's rows
        before = item_count()
        response = invoke(http_event(route, token="", **event))
        after = item_count()

    assert response["statusCode"] == 401
    assert response["headers"]["www-authenticate"] == "Bearer"
    assert after == before


ITEM_ROUTES: dict[str, dict[str, Any]] = {
    "POST /items": {"body": {"sku": "no-owner-1", "name": "x"}},
    "GET /items": {},
    "GET /items/{item_id}": {},
    "PATCH /items/{item_id}": {"body": {"quantity": 1}},
    "DELETE /items/{item_id}": {},
}
NAMES_NO_USER: dict[str, dict[str, Any]] = {
    "anon": {"role": "anon", "sub": None},
    "anon with a sub": {"role": "anon"},
    "service_role without sub": {"role": "service_role", "sub": None},
}


@pytest.mark.parametrize("caller", NAMES_NO_USER)
@pytest.mark.parametrize("route", ITEM_ROUTES)
def test_a_caller_who_acts_for_no_user_is_403_and_touches_no_row(
    tokens: Tokens, route: str, caller: str
) -> None:
    """Items are a user's own rows: anon has no grant on them, and an item needs an owner."""
    token = tokens.token(**NAMES_NO_USER[caller])
    with acting_as_login_role():  # every user's rows
        item = create(new_sku()) if "{item_id}" in route else None
        before = item_count()
    path = f"/items/{item['id']}" if item else None

    response = invoke(http_event(route, path, token=token, **ITEM_ROUTES[route]))
    with acting_as_login_role():
        after = item_count()

    assert response["statusCode"] == 403
    assert body_of(response) == {"code": "forbidden", "message": NEEDS_USER}
    assert after == before


def test_a_service_role_token_that_names_a_user_acts_for_it_over_every_users_items(
    tokens: Tokens,
) -> None:
    someone_elses = create(new_sku())  # the test's own user's item
    service_user = str(uuid.uuid4())
    service = tokens.token(user_id=service_user, role="service_role")

    created = invoke(http_event("POST /items", body={"sku": new_sku(), "name": "x"}, token=service))
    read = invoke(
        http_event("GET /items/{item_id}", path=f"/items/{someone_elses['id']}", token=service)
    )
    with acting_as_login_role(), autocommit_connection() as conn:
        owner = conn.execute(
            select(Item.owner_id).where(Item.id == body_of(created)["id"])
        ).scalar_one()

    assert created["statusCode"] == 201
    assert str(owner) == service_user
    assert body_of(read) == someone_elses
