"""A browser calls the items API from another origin, through serverless offline's CORS.

Every items call sends `Authorization`, so the browser asks first (a preflight) and sends the
call only if the answer names the page's origin. The local API serves the deployed policy for
the e2e `frontend` origin alone: its page gets through, another site's page does not.
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import urlencode

import httpx

from tests.fixtures.browser import Browser, PageServer, element_text
from tests.fixtures.tokens import Tokens, bearer

# What the page calls, in order, with a token; the items's id is 0 when none was created.
CALLS_WITH_A_TOKEN = [
    "POST /items",
    "GET /items/{id}",
    "PATCH /items/{id}",
    "GET /items?limit=100",
    "DELETE /items/{id}",
]


def warm_up(api: httpx.Client, token: str, attempts: int = 3) -> None:
    """Call the items function until it answers, so the page does not wait for its cold start.

    On a loaded machine a cold start can outlast the function's timeout; serverless offline
    then answers 200 with a timeout error and starts the next request cold again.
    """
    for _ in range(attempts):
        if "items" in api.get("/items", params={"limit": 1}, headers=bearer(token)).json():
            return
    raise AssertionError(f"the items function timed out {attempts} times in a row")


def calls_from_page(
    browser: Browser, site: PageServer, api: httpx.Client, token: str, sku: str
) -> list[dict[str, Any]]:
    """What each call of tests/e2e/pages/items.html got, loaded from `site` in Chromium."""
    query = urlencode({"api": str(api.base_url).rstrip("/"), "token": token, "sku": sku})
    dom = browser.dump_dom(f"{site.origin}/items.html?{query}")
    calls: list[dict[str, Any]] = json.loads(element_text(dom, "results"))
    return calls


def test_a_page_from_a_named_origin_uses_the_api_with_a_token(
    browser: Browser, frontend: PageServer, api: httpx.Client, tokens: Tokens
) -> None:
    token = tokens.token()
    sku = f"BROWSER-{uuid.uuid4().hex[:10]}"
    warm_up(api, token)

    calls = calls_from_page(browser, frontend, api, token, sku)

    assert [call.get("status") for call in calls] == [201, 200, 200, 200, 204, 401], calls
    created, _, patched, listed = (call["body"] for call in calls[:4])
    assert created["sku"] == sku
    assert patched["name"] == "Big teapot"
    assert created["id"] in [item["id"] for item in listed["items"]]
    # Exposed to the page: without it a client cannot tell a missing token from a bad one.
    assert calls[-1]["wwwAuthenticate"] == "Bearer"


def test_a_page_from_another_origin_is_refused_by_the_browser_and_writes_nothing(
    browser: Browser, other_site: PageServer, api: httpx.Client, tokens: Tokens
) -> None:
    token = tokens.token()
    sku = f"BROWSER-{uuid.uuid4().hex[:10]}"
    warm_up(api, token)

    calls = calls_from_page(browser, other_site, api, token, sku)

    with_a_token = calls[: len(CALLS_WITH_A_TOKEN)]
    assert [call["call"] for call in with_a_token] == [
        call.replace("{id}", "0") for call in CALLS_WITH_A_TOKEN
    ]
    # Refused by the browser: fetch rejects, and the page never sees a status.
    assert [call.get("error") for call in with_a_token] == ["TypeError: Failed to fetch"] * 5
    # The page's last call, a GET with no token, needs no preflight: serverless-offline answers
    # those with any Origin allowed (API Gateway does not), so it proves nothing here.
    # The preflight failed, so the POST was never sent: the user has no item.
    listed = api.get("/items", params={"limit": 100}, headers=bearer(token))
    assert listed.status_code == 200
    assert [item for item in listed.json()["items"] if item["sku"] == sku] == []
