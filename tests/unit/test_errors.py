"""The mapping from errors to HTTP status and body; no network."""

from __future__ import annotations

import logging

import psycopg
import pytest
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from shared.errors import (
    RETRY_AFTER_SECONDS,
    DatabaseConfigError,
    ItemNotFoundError,
    error_response,
    http_error,
    invalid_request,
)

SECRET_DETAIL = 'Key (sku)=(customer-secret-42) already exists; password "hunter2"'


def raised(exc: Exception) -> Exception:
    """The exception with a traceback, as handlers see it."""
    try:
        raise exc
    except Exception as caught:
        return caught


def test_not_found_is_404_with_its_message() -> None:
    response = error_response(ItemNotFoundError(7))

    assert response.status_code == 404
    assert response.body == {"code": "not_found", "message": "Item 7 not found"}


def test_integrity_error_is_409_without_the_database_detail() -> None:
    exc = IntegrityError("INSERT ...", {}, psycopg.errors.UniqueViolation(SECRET_DETAIL))

    response = error_response(raised(exc))

    assert response.status_code == 409
    assert "secret" not in str(response.body)


@pytest.mark.parametrize(
    "exc",
    [
        OperationalError("connect", {}, psycopg.OperationalError("pooler full: " + SECRET_DETAIL)),
        DatabaseConfigError("DATABASE_URL is not set"),
    ],
)
def test_database_trouble_is_503_with_retry_after(exc: Exception) -> None:
    response = error_response(raised(exc))

    assert response.status_code == 503
    assert response.headers == {"Retry-After": str(RETRY_AFTER_SECONDS)}
    assert "secret" not in str(response.body)


def test_unexpected_errors_are_500_and_logged_without_message_or_trace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exc = ProgrammingError("SELECT", {}, psycopg.errors.UndefinedTable(SECRET_DETAIL))

    with caplog.at_level(logging.ERROR, logger="shared.errors"):
        response = error_response(raised(exc))

    assert response.status_code == 500
    assert response.body == {"code": "internal_error", "message": "Internal server error"}
    [record] = caplog.records
    assert record.error == "ProgrammingError"  # type: ignore[attr-defined]
    assert record.sqlstate == "42P01"  # type: ignore[attr-defined]
    assert "test_errors.py" in record.raised_at  # type: ignore[attr-defined]
    assert "secret" not in caplog.text
    assert record.exc_info is None


def test_body_that_is_not_json_is_400() -> None:
    response = invalid_request([{"type": "json_invalid", "loc": ("body", 1), "msg": "bad"}])

    assert response.status_code == 400
    assert response.body["code"] == "malformed_json"


def test_validation_details_do_not_echo_the_input() -> None:
    errors = [
        {"type": "int_type", "loc": ("body", "quantity"), "msg": "bad", "input": "secret-value"}
    ]

    response = invalid_request(errors)

    assert response.status_code == 422
    assert response.body["details"] == [
        {"loc": ["body", "quantity"], "message": "bad", "type": "int_type"}
    ]


@pytest.mark.parametrize(("status", "code"), [(404, "not_found"), (405, "method_not_allowed")])
def test_framework_errors_keep_their_status(status: int, code: str) -> None:
    assert http_error(status, "x").body == {"code": code, "message": "x"}
