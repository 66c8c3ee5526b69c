"""The items sample over HTTP through `serverless offline`: its whole life, and bad input."""

from __future__ import annotations

import uuid

import httpx


def test_items_crud_over_http(api: httpx.Client) -> None:
    sku = f"E2E-{uuid.uuid4().hex[:10]}"

    created = api.post("/items", json={"sku": sku, "name": "Teapot", "quantity": 2})
    item_id = created.json()["id"]
    listed = api.get("/items", params={"after": item_id - 1, "limit": 1})
    patched = api.patch(f"/items/{item_id}", json={"name": "Big teapot"})
    deleted = api.delete(f"/items/{item_id}")
    missing = api.get(f"/items/{item_id}")

    assert created.status_code == 201
    assert listed.json()["items"] == [created.json()]
    assert patched.json()["name"] == "Big teapot"
    assert deleted.status_code == 204
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"


def test_bad_input_over_http(api: httpx.Client) -> None:
    malformed = api.post(
        "/items", content=b'{"sku": ', headers={"content-type": "application/json"}
    )
    wrong_type = api.post("/items", json={"sku": "x1", "name": "n", "quantity": "many"})
    too_big_page = api.get("/items", params={"limit": 1000})

    assert malformed.status_code == 400
    assert malformed.json()["code"] == "malformed_json"
    assert wrong_type.status_code == 422
    assert too_big_page.status_code == 422
