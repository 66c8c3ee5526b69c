"""Every route of serverless.yml over HTTP through `serverless offline`, as API Gateway would
call them, and nothing else: a request on an undeclared route never reaches a function."""

from __future__ import annotations

import httpx
import pytest

from infra.serverless_config import Route
from tests.e2e.conftest import OfflineLog
from tests.fixtures.lambda_events import fill_path, path_parameter_names
from tests.fixtures.service import BODY_METHODS, ROUTES
from tests.fixtures.tokens import Tokens, bearer

# What serverless offline answers itself, with a 404, for a route it does not serve.
OFFLINE_NOT_FOUND = "Serverless-offline: route not found."
# A path parameter no stored row has, so that no request here changes the sample's data.
NO_SUCH_ROW = "0"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
PATHS = sorted({route.path for route in ROUTES})


def undeclared_method(path: str) -> str:
    """A method serverless.yml declares no route for on `path`."""
    declared = {route.method for route in ROUTES if route.path == path}
    return next(method for method in METHODS if method not in declared)


def request_on(api: httpx.Client, route: Route) -> httpx.Response:
    path = fill_path(route, dict.fromkeys(path_parameter_names(route), NO_SUCH_ROW))
    return api.request(route.method, path, json={} if route.method in BODY_METHODS else None)


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.key)
def test_each_declared_route_reaches_its_function(
    api: httpx.Client, offline_log: OfflineLog, route: Route
) -> None:
    response = request_on(api, route)

    path = fill_path(route, dict.fromkeys(path_parameter_names(route), NO_SUCH_ROW))
    assert offline_log.invocations() == [(f"{route.method} {path}", ROUTES[route].name)]
    assert response.status_code < 500
    assert response.headers["content-type"].startswith("application/json")
    assert response.json().get("error") != OFFLINE_NOT_FOUND


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/no-such-route"),
        *[(undeclared_method(path), fill_path(Route("", path))) for path in PATHS],
    ],
)
def test_undeclared_routes_never_reach_a_function(
    api: httpx.Client, offline_log: OfflineLog, method: str, path: str
) -> None:
    response = api.request(method, path)

    assert response.status_code == 404
    assert response.json()["error"] == OFFLINE_NOT_FOUND
    assert offline_log.invocations() == []


def test_connection_monitor_over_http(api: httpx.Client, tokens: Tokens) -> None:
    report = api.get("/connections", headers=bearer(tokens.service_role())).json()

    assert report["max_connections"] > 0
    assert report["in_use"] >= 1
    assert {"with_data_api", "without_data_api"} == set(report["guidance"])


def test_connection_monitor_refuses_over_http_what_it_should(
    api: httpx.Client, tokens: Tokens
) -> None:
    """The 401s and their challenge, and the 403, as a client sees them through the gateway.

    One forged token checks the wiring; each kind of forgery is refused in test_tokens.py."""
    missing = api.get("/connections")
    forged = api.get(
        "/connections",
        headers=bearer(tokens.forged("HS256 with the public key as secret", role="service_role")),
    )
    user = api.get("/connections", headers=bearer(tokens.token()))
    service = api.get("/connections", headers=bearer(tokens.service_role()))

    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["code"] == "not_authenticated"
    assert forged.status_code == 401
    assert forged.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert forged.json()["code"] == "invalid_token"
    assert user.status_code == 403
    assert service.status_code == 200


def test_health_stays_public(api: httpx.Client, tokens: Tokens) -> None:
    assert api.get("/health").status_code == 200
    assert api.get("/health", headers=bearer(tokens.forged("alg none"))).status_code == 200
