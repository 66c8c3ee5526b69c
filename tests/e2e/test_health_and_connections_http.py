"""The readiness check and the connection monitor over HTTP through `serverless offline`."""

from __future__ import annotations

import httpx


def test_health(api: httpx.Client) -> None:
    response = api.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "reachable"}


def test_connection_monitor_over_http(api: httpx.Client) -> None:
    report = api.get("/connections").json()

    assert report["max_connections"] > 0
    assert report["in_use"] >= 1
    assert {"with_data_api", "without_data_api"} == set(report["guidance"])
