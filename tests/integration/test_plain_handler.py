"""`@plain_handler` against the stack: the answer read through the pooler, errors as JSON."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

from shared._errors import NotFoundError
from shared._plain_handler import plain_handler
from tests.fixtures.lambda_events import LambdaTestContext, body_of, http_event


@plain_handler
def database_role(conn: Connection) -> dict[str, Any]:
    return {"role": conn.scalar(text("select current_setting('role')"))}


@plain_handler
def nothing_here(_conn: Connection) -> dict[str, Any]:
    raise NotFoundError("No such thing")


def test_the_answer_is_a_200_read_as_anon() -> None:
    response = database_role(http_event("GET /health"), LambdaTestContext())

    assert response["statusCode"] == 200
    assert response["headers"]["content-type"] == "application/json"
    assert body_of(response) == {"role": "anon"}


def test_an_error_the_answer_raises_is_its_json_status() -> None:
    response = nothing_here(http_event("GET /health"), LambdaTestContext())

    assert response["statusCode"] == 404
    assert body_of(response) == {"code": "not_found", "message": "No such thing"}
