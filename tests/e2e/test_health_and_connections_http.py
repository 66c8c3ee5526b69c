"""The readiness check over HTTP through `serverless offline` (the connection monitor, which
takes a service_role token, is in test_http.py)."""

from __future__ import annotations

import httpx


def test_health(api: httpx.Client) -> None:
    response = api.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "reachable"}
