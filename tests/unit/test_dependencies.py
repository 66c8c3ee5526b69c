"""`IdentityDep` and `ServiceRoleDep` in a FastAPI function, invoked as Lambda invokes it
(API Gateway v2.0 events through Mangum and the boundary); tokens verified against a real JWKS
over loopback HTTP, no database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import boto3
import jwt
import pytest
import requests
from fastapi import FastAPI
from mangum import Mangum
from moto.core import enable_iam_authentication

from shared._boundary import lambda_boundary
from shared._dependencies import IdentityDep, ServiceRoleDep
from shared._fastapi_app import error_responses, install_error_handlers
from shared._secrets import secrets_manager_client
from shared._settings import get_settings
from shared._tokens import get_verifier
from tests.fixtures.lambda_http import lambda_session
from tests.fixtures.secrets_extension import serve_secrets_extension
from tests.fixtures.tokens import Tokens, bearer

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


def test_identitydep_refuses_a_forged_token(client: requests.Session, tokens: Tokens) -> None:
    """The dependency's wiring to the verifier; each kind of forgery is refused in
    test_tokens.py, where the verifier is checked."""
    forged = client.get(f"{BASE_URL}/me", headers=bearer(tokens.forged("signed by another key")))
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


LEGACY_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"


def forget_clients_and_settings() -> None:
    get_settings.cache_clear()
    get_verifier.cache_clear()
    secrets_manager_client.cache_clear()


@pytest.fixture(params=["missing", "denied"])
def unreadable_legacy_secret(
    request: pytest.FixtureRequest, aws: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """SUPABASE_JWT_SECRET_ARN naming a secret that does not exist (read through boto3), or one
    the function may not read: read as deployed, through the extension (its stand-in), whose
    credentials belong to a user with no policy at all, moto enforcing IAM."""
    with ExitStack() as stack:
        if request.param == "missing":
            arn = "arn:aws:secretsmanager:eu-central-1:123456789012:secret:missing-AbCdEf"
        else:
            created = boto3.client("secretsmanager").create_secret(
                Name="jwt-secret", SecretString=LEGACY_SECRET
            )
            arn = created["ARN"]
            iam = boto3.client("iam")
            iam.create_user(UserName="function-without-rights")
            key = iam.create_access_key(UserName="function-without-rights")["AccessKey"]
            without_rights = boto3.client(
                "secretsmanager",
                aws_access_key_id=key["AccessKeyId"],
                aws_secret_access_key=key["SecretAccessKey"],
            )
            extension = stack.enter_context(serve_secrets_extension(without_rights))
            for name, value in extension.environment().items():
                monkeypatch.setenv(name, value)
            stack.enter_context(enable_iam_authentication())
        monkeypatch.setenv("SUPABASE_JWT_SECRET_ARN", arn)
        forget_clients_and_settings()
        yield request.param
    monkeypatch.undo()
    forget_clients_and_settings()


def test_an_unreadable_legacy_secret_is_500_on_every_request_never_503(
    client: requests.Session, tokens: Tokens, unreadable_legacy_secret: str
) -> None:
    """A configuration mistake to fix, not an outage: no Retry-After telling clients it will
    pass. The key cache's back-off holds only for real unavailability."""
    token = jwt.encode(tokens.claims(), LEGACY_SECRET, algorithm="HS256")

    answers = [client.get(f"{BASE_URL}/me", headers=bearer(token)) for _ in range(2)]
    es256 = client.get(f"{BASE_URL}/me", headers=bearer(tokens.token()))

    assert [answer.status_code for answer in answers] == [500, 500]
    assert [answer.json()["code"] for answer in answers] == ["internal_error"] * 2
    assert not any("Retry-After" in answer.headers for answer in answers)
    assert es256.status_code == 200  # the JWKS path does not depend on the secret
