"""The Lambda boundary's reading of an event, whatever kind of HTTP event it is; no network."""

from __future__ import annotations

from typing import Any

import pytest

from shared._boundary import request_header
from tests.fixtures.lambda_events import function_url_event, http_event, rest_event


@pytest.mark.parametrize(
    "event",
    [
        http_event("GET /connections"),
        rest_event("GET", "/connections"),
        function_url_event("GET", "/connections"),
    ],
    ids=["http-api-v2", "rest-v1", "function-url"],
)
def test_plain_handlers_read_the_header_whatever_its_case_and_event_kind(
    event: dict[str, Any],
) -> None:
    event["headers"] = {**(event.get("headers") or {}), "AuThOrIzAtIoN": "Bearer abc"}

    assert request_header(event, "Authorization") == "Bearer abc"
    assert request_header(event, "x-not-sent") is None
