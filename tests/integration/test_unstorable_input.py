"""Text Postgres cannot store is a 422 from the schemas: it never reaches the database."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import text

from functions.items.handler import handler
from shared._engine import autocommit_connection
from tests.fixtures.lambda_events import LambdaTestContext, body_of, http_event

pytestmark = pytest.mark.usefixtures("as_user")  # items are a user's own rows

NUL_BODIES = [
    ({"sku": "N-1", "name": "a\u0000b"}, "name"),
    ({"sku": "N\u00001", "name": "ab"}, "sku"),
]


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    return handler(event, LambdaTestContext())


def item_count() -> int:
    with autocommit_connection() as conn:
        return int(conn.execute(text("SELECT count(*) FROM items")).scalar_one())


@pytest.mark.parametrize(("body", "field"), NUL_BODIES)
def test_nul_in_a_created_item_is_422_and_writes_nothing(body: dict[str, Any], field: str) -> None:
    before = item_count()

    response = invoke(http_event("POST /items", body=body))

    assert response["statusCode"] == 422
    assert body_of(response)["details"][0]["loc"] == ["body", field]
    assert item_count() == before


@pytest.mark.parametrize(("body", "field"), NUL_BODIES)
def test_nul_in_an_update_is_422_and_changes_nothing(body: dict[str, Any], field: str) -> None:
    created = invoke(
        http_event("POST /items", body={"sku": f"NUL-{uuid.uuid4().hex[:8]}", "name": "kept"})
    )
    path = f"/items/{body_of(created)['id']}"

    response = invoke(http_event("PATCH /items/{item_id}", path=path, body=body))
    after = invoke(http_event("GET /items/{item_id}", path=path))

    assert response["statusCode"] == 422
    assert body_of(response)["details"][0]["loc"] == ["body", field]
    assert body_of(after) == body_of(created)
