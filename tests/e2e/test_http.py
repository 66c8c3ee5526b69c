"""Every route over HTTP through `serverless offline`, as API Gateway would call them."""

from __future__ import annotations

import uuid

import httpx
import pytest
import yaml

from infra import PROJECT_ROOT
from tests.fixtures.tokens import Tokens, bearer

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


@pytest.mark.parametrize(("method", "path"), [("GET", "/nope"), ("PUT", "/items/1")])
def test_routes_not_in_serverless_yml_are_not_served(
    api: httpx.Client, method: str, path: str
) -> None:
    assert api.request(method, path).status_code in {403, 404, 405}


def test_connection_monitor_over_http(api: httpx.Client, tokens: Tokens) -> None:
    report = api.get("/connections", headers=bearer(tokens.service_role())).json()

    assert report["max_connections"] > 0
    assert report["in_use"] >= 1
    assert {"with_data_api", "without_data_api"} == set(report["guidance"])


def test_connection_monitor_refuses_over_http_what_it_should(
    api: httpx.Client, tokens: Tokens
) -> None:
    """The 401s and their challenge, and the 403, as a client sees them through the gateway."""
    missing = api.get("/connections")
    forged = {
        kind: api.get("/connections", headers=bearer(tokens.forged(kind, role="service_role")))
        for kind in ("signed by another key", "alg none", "HS256 with the public key as secret")
    }
    user = api.get("/connections", headers=bearer(tokens.token()))
    service = api.get("/connections", headers=bearer(tokens.service_role()))

    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["code"] == "not_authenticated"
    assert {kind: r.status_code for kind, r in forged.items()} == dict.fromkeys(forged, 401)
    assert all(r.headers["www-authenticate"].startswith("Bearer error=") for r in forged.values())
    assert user.status_code == 403
    assert service.status_code == 200


def test_health_stays_public(api: httpx.Client, tokens: Tokens) -> None:
    assert api.get("/health").status_code == 200
    assert api.get("/health", headers=bearer(tokens.forged("alg none"))).status_code == 200
