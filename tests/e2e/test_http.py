"""Every route over HTTP through `serverless offline`, as API Gateway would call them."""

from __future__ import annotations

import uuid

import httpx
import psycopg
import pytest
import yaml

from infra import PROJECT_ROOT
from infra.local_stack import LocalStack

ROOT = PROJECT_ROOT


def declared_routes() -> set[str]:
    """The routes serverless.yml declares, as 'METHOD /path'."""
    config = yaml.safe_load((ROOT / "serverless.yml").read_text())
    return {
        event["httpApi"]
        for function in config["functions"].values()
        for event in function["events"]
    }


def test_serverless_yml_declares_exactly_the_sample_routes() -> None:
    assert declared_routes() == {
        "GET /health",
        "GET /connections",
        "POST /items",
        "GET /items",
        "GET /items/{item_id}",
        "PATCH /items/{item_id}",
        "DELETE /items/{item_id}",
    }


def test_health(api: httpx.Client) -> None:
    response = api.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "reachable"}


def test_items_over_http_fail_closed_without_an_identity(
    api: httpx.Client, database: LocalStack
) -> None:
    # Nothing puts an identity in scope for an HTTP request until the route layer takes it from
    # the caller's token: the items function then refuses to touch any user's rows.
    sku = f"E2E-{uuid.uuid4().hex[:10]}"

    created = api.post("/items", json={"sku": sku, "name": "Teapot", "quantity": 2})
    listed = api.get("/items")

    assert (created.status_code, listed.status_code) == (500, 500), (created.text, listed.text)
    assert created.json() == {"code": "internal_error", "message": "Internal server error"}
    assert sku not in listed.text
    with psycopg.connect(database.direct_url()) as conn:  # the login role sees every row
        assert conn.execute("SELECT count(*) FROM items WHERE sku = %s", (sku,)).fetchone() == (0,)


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


@pytest.mark.parametrize(("method", "path"), [("GET", "/nope"), ("PUT", "/items/1")])
def test_routes_not_in_serverless_yml_are_not_served(
    api: httpx.Client, method: str, path: str
) -> None:
    assert api.request(method, path).status_code in {403, 404, 405}


def test_connection_monitor_over_http(api: httpx.Client) -> None:
    report = api.get("/connections").json()

    assert report["max_connections"] > 0
    assert report["in_use"] >= 1
    assert {"with_data_api", "without_data_api"} == set(report["guidance"])
