"""The event builder against events captured from API Gateway: same shape, field for field."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.lambda_events import http_event, path_parameters, stored_event

# Different in every request, so left out of the comparison: which request, and when.
PER_REQUEST = ("requestId", "time", "timeEpoch")


def without_per_request_fields(event: dict[str, Any]) -> dict[str, Any]:
    context = {k: v for k, v in event["requestContext"].items() if k not in PER_REQUEST}
    return {**event, "requestContext": context}


@pytest.mark.parametrize(
    ("captured", "built"),
    [
        ("get_item", lambda: http_event("GET /items/{item_id}", params={"item_id": 1})),
        (
            "post_items",
            lambda: http_event(
                "POST /items", body={"sku": "SKU-1", "name": "Blue mug", "quantity": 3}
            ),
        ),
    ],
)
def test_built_event_is_the_captured_one(captured: str, built: Any) -> None:
    event = built()

    assert without_per_request_fields(event) == without_per_request_fields(stored_event(captured))
    assert set(PER_REQUEST) <= event["requestContext"].keys()


def test_query_and_path_are_kept_consistent() -> None:
    event = http_event(
        "GET /things/{thing}/parts/{part}", path="/things/a%20b/parts/7", query="x=1&y="
    )

    assert event["pathParameters"] == {"thing": "a%20b", "part": "7"}
    assert event["rawPath"] == event["requestContext"]["http"]["path"]
    assert event["queryStringParameters"] == {"x": "1", "y": ""}
    assert (
        event["routeKey"]
        == event["requestContext"]["routeKey"]
        == "GET /things/{thing}/parts/{part}"
    )


def test_a_path_the_route_does_not_match_has_no_path_parameters() -> None:
    assert path_parameters("GET /things/{thing}", "/elsewhere") is None
    assert path_parameters("GET /files/{key+}", "/files/a/b.txt") == {"key": "a/b.txt"}
    assert "pathParameters" not in http_event("GET /health")
