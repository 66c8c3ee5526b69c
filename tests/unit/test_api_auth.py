"""`IdentityDep` and `ServiceRoleDep` in a FastAPI function, invoked as Lambda invokes it
(API Gateway v2.0 events through Mangum and the boundary); tokens verified against a real JWKS
over loopback HTTP, no database."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from fastapi import FastAPI
from mangum import Mangum

from shared.api import IdentityDep, ServiceRoleDep, error_responses, install_error_handlers
from shared.http import lambda_boundary, request_header
from tests.fixtures.lambda_events import function_url_event, http_event, rest_event
from tests.fixtures.lambda_http import lambda_session
from tests.fixtures.tokens import FORGERIES, Tokens, bearer

BASE_URL = "https://api.example.test"


def build_app() -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/me", responses=error_responses(401, 503))
    async def me(identity: IdentityDep) -> dict[str, Any]:
        return {"role": identity.role, "user_id": identity.user_id}

    @app.get("/admin", responses=error_responses(401, 403, 503))
    async def admin(identity: ServiceRoleDep) -> dict[str, Any]:
        return {"role": identity.role}

    install_error_handlers(app)
    return app


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return build_app()


@pytest.fixture
def client(app: FastAPI, tokens: Tokens) -> Iterator[requests.Session]:
    session, _ = lambda_session(lambda_boundary(Mangum(app, lifespan="off")), BASE_URL)
    with session:
        yield session


def test_a_route_with_identitydep_gets_the_verified_user(
    client: requests.Session, tokens: Tokens
) -> None:
    user_id = "7d3f1c2e-0000-4000-8000-000000000001"

    response = client.get(f"{BASE_URL}/me", headers=bearer(tokens.token(user_id)))

    assert response.status_code == 200
    assert response.json() == {"role": "authenticated", "user_id": user_id}


def test_identitydep_without_a_token_is_401_in_the_json_shape(client: requests.Session) -> None:
    response = client.get(f"{BASE_URL}/me")

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["code"] == "not_authenticated"


@pytest.mark.parametrize("kind", FORGERIES)
def test_identitydep_refuses_each_forgery(
    client: requests.Session, tokens: Tokens, kind: str
) -> None:
    forged = client.get(f"{BASE_URL}/me", headers=bearer(tokens.forged(kind)))
    genuine = client.get(f"{BASE_URL}/me", headers=bearer(tokens.token()))

    assert forged.status_code == 401
    assert forged.json()["code"] == "invalid_token"
    assert 'error="invalid_token"' in forged.headers["WWW-Authenticate"]
    assert genuine.status_code == 200


def test_servicerole_dep_is_401_403_or_200(client: requests.Session, tokens: Tokens) -> None:
    missing = client.get(f"{BASE_URL}/admin")
    user = client.get(f"{BASE_URL}/admin", headers=bearer(tokens.token()))
    service = client.get(f"{BASE_URL}/admin", headers=bearer(tokens.service_role()))

    assert missing.status_code == 401
    assert (user.status_code, user.json()["code"]) == (403, "forbidden")
    assert service.json() == {"role": "service_role"}


def test_the_openapi_document_declares_the_bearer_scheme_and_the_401(app: FastAPI) -> None:
    document = app.openapi()
    me = document["paths"]["/me"]["get"]

    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert me["security"] == [{"HTTPBearer": []}]
    assert "WWW-Authenticate" in me["responses"]["401"]["headers"]
    assert "403" in document["paths"]["/admin"]["get"]["responses"]


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
