"""The app factory and the Lambda handler it is served by: every error answered as JSON, no
documentation routes; invoked as Lambda invokes it, no network."""

from __future__ import annotations

from fastapi import APIRouter

from shared._fastapi_app import create_app, lambda_handler
from tests.fixtures.lambda_events import LambdaTestContext, body_of, http_event

router = APIRouter()


@router.get("/things")
def list_things() -> list[str]:
    return ["mug"]


handler = lambda_handler(create_app(router, title="Things API"))


def test_a_route_answers_through_the_lambda_handler() -> None:
    response = handler(http_event("GET /things"), LambdaTestContext())

    assert response["statusCode"] == 200
    assert body_of(response) == ["mug"]


def test_a_method_the_path_lacks_is_405_as_json_naming_the_allowed_ones() -> None:
    response = handler(http_event("POST /things", body={}), LambdaTestContext())

    assert response["statusCode"] == 405
    assert response["headers"]["allow"] == "GET"
    assert body_of(response)["code"] == "method_not_allowed"


def test_the_app_serves_no_documentation_routes() -> None:
    """API Gateway routes only what serverless.yml declares: docs could never be reached."""
    for path in ("/docs", "/redoc", "/openapi.json"):
        response = handler(http_event(f"GET {path}"), LambdaTestContext())

        assert response["statusCode"] == 404
        assert body_of(response)["code"] == "not_found"
