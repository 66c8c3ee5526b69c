"""The items sample over HTTP through `serverless offline`: two users' whole lives, bad input,
and no token. The functions verify each token against the session's JWKS over HTTP."""

from __future__ import annotations

import uuid

import httpx

from tests.fixtures.tokens import Tokens, bearer


def test_two_users_crud_over_http_never_touch_each_others_items(
    api: httpx.Client, tokens: Tokens
) -> None:
    alice, bob = bearer(tokens.token()), bearer(tokens.token())
    sku = f"E2E-{uuid.uuid4().hex[:10]}"

    created = api.post("/items", json={"sku": sku, "name": "Teapot", "quantity": 2}, headers=alice)
    item_id = created.json()["id"]
    bobs = api.post("/items", json={"sku": sku, "name": "Bob's teapot"}, headers=bob)
    listed = api.get("/items", params={"after": item_id - 1, "limit": 1}, headers=alice)
    bob_listed = api.get("/items", params={"limit": 100}, headers=bob)
    bob_reads = api.get(f"/items/{item_id}", headers=bob)
    bob_patches = api.patch(f"/items/{item_id}", json={"name": "Mine"}, headers=bob)
    bob_deletes = api.delete(f"/items/{item_id}", headers=bob)
    patched = api.patch(f"/items/{item_id}", json={"name": "Big teapot"}, headers=alice)
    deleted = api.delete(f"/items/{item_id}", headers=alice)
    missing = api.get(f"/items/{item_id}", headers=alice)

    assert created.status_code == 201
    assert bobs.status_code == 201  # the same SKU: unique per owner, not globally
    assert listed.json()["items"] == [created.json()]
    assert [item["id"] for item in bob_listed.json()["items"]] == [bobs.json()["id"]]
    # Another user's item is a 404, never a 403 that would confirm it exists.
    assert [bob_reads.status_code, bob_patches.status_code, bob_deletes.status_code] == [404] * 3
    assert patched.json()["name"] == "Big teapot"
    assert deleted.status_code == 204
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"


def test_items_without_a_valid_token_are_401_over_http(api: httpx.Client, tokens: Tokens) -> None:
    missing = api.get("/items")
    forged = api.post(
        "/items",
        json={"sku": f"E2E-{uuid.uuid4().hex[:10]}", "name": "Forged"},
        headers=bearer(tokens.forged("signed by another key")),
    )
    genuine = api.get("/items", headers=bearer(tokens.token()))

    assert (missing.status_code, forged.status_code, genuine.status_code) == (401, 401, 200)
    assert missing.headers["www-authenticate"] == "Bearer"
    assert forged.headers["www-authenticate"].startswith("Bearer error=")


def test_bad_input_over_http(api: httpx.Client, tokens: Tokens) -> None:
    user = bearer(tokens.token())
    malformed = api.post(
        "/items", content=b'{"sku": ', headers={"content-type": "application/json", **user}
    )
    wrong_type = api.post(
        "/items", json={"sku": "x1", "name": "n", "quantity": "many"}, headers=user
    )
    too_big_page = api.get("/items", params={"limit": 1000}, headers=user)

    assert malformed.status_code == 400
    assert malformed.json()["code"] == "malformed_json"
    assert wrong_type.status_code == 422
    assert too_big_page.status_code == 422


def test_tokens_a_client_made_up_are_4xx_over_http_never_500(
    api: httpx.Client, tokens: Tokens
) -> None:
    """The outside review's cases, over HTTP: a header `alg` that is a list, a validly signed
    anon token, a service_role token without `sub` creating an item, issuer-signed claims of the
    wrong type. Each is refused with the JSON body; the genuine user's token is served."""
    sku = f"E2E-{uuid.uuid4().hex[:10]}"
    alg_a_list = "eyJhbGciOlsiRVMyNTYiXSwia2lkIjoieCJ9.e30.eA"
    exp_a_string = tokens.signed(tokens.header(), tokens.claims() | {"exp": "9999999999"})
    role_a_list = tokens.signed(tokens.header(), tokens.claims() | {"role": ["service_role"]})
    anon = tokens.token(role="anon", sub=None)
    service_without_sub = tokens.token(role="service_role", sub=None)

    answers = {
        "alg a list": api.get("/items", headers=bearer(alg_a_list)),
        "exp a string": api.get("/items", headers=bearer(exp_a_string)),
        "role a list": api.get("/items", headers=bearer(role_a_list)),
        "anon": api.get("/items", headers=bearer(anon)),
        "service_role without sub": api.post(
            "/items", json={"sku": sku, "name": "No owner"}, headers=bearer(service_without_sub)
        ),
        "alg a list, /connections": api.get("/connections", headers=bearer(alg_a_list)),
    }
    genuine = api.get("/items", headers=bearer(tokens.token()))

    assert {name: answer.status_code for name, answer in answers.items()} == {
        "alg a list": 401,
        "exp a string": 401,
        "role a list": 401,
        "anon": 403,
        "service_role without sub": 403,
        "alg a list, /connections": 401,
    }
    assert all(
        answer.json()["code"] in {"invalid_token", "forbidden"} for answer in answers.values()
    )
    assert genuine.status_code == 200
