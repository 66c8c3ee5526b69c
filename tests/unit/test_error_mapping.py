"""The mapping from the application's own errors to HTTP status and body; no network.

Database errors are mapped from real ones in tests/integration/test_error_mapping.py.
"""

from __future__ import annotations

import logging

import pytest

from shared._error_mapping import RETRY_AFTER_SECONDS, error_response, http_error, invalid_request
from shared._errors import AppError, DatabaseConfigError, DatabaseSecretNotSetError, NotFoundError

GENERIC_500 = {"code": "internal_error", "message": "Internal server error"}


def raised(exc: Exception) -> Exception:
    """The exception with a traceback, as handlers see it."""
    try:
        raise exc
    except Exception as caught:
        return caught


class OrderNotFoundError(NotFoundError):
    """A function's own not-found error, as functions/items/errors.py declares one."""


def test_a_functions_not_found_error_is_404_with_its_message() -> None:
    response = error_response(OrderNotFoundError("Order 7 not found"))

    assert response.status_code == 404
    assert response.body == {"code": "not_found", "message": "Order 7 not found"}


def test_configuration_error_is_a_generic_500_logged_once_with_the_setting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exc = DatabaseConfigError("The database URL cannot be parsed", setting="DATABASE_URL")

    with caplog.at_level(logging.DEBUG):
        response = error_response(raised(exc))

    assert response.status_code == 500
    assert response.body == GENERIC_500
    assert response.headers == {}  # no Retry-After: retrying does not fix a setting
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert record.setting == "DATABASE_URL"  # type: ignore[attr-defined]
    assert record.exc_info is None


def test_secret_not_set_yet_is_503_with_retry_after(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        response = error_response(raised(DatabaseSecretNotSetError("no URL yet")))

    assert response.status_code == 503
    assert response.headers == {"Retry-After": str(RETRY_AFTER_SECONDS)}
    assert response.body == {"code": "service_unavailable", "message": "no URL yet"}
    assert [record.levelno for record in caplog.records] == [logging.WARNING]


@pytest.mark.parametrize("exc", [ValueError("customer-secret-42"), AppError("customer-secret-42")])
def test_unexpected_errors_are_500_logged_with_the_project_frame_not_the_message(
    exc: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        response = error_response(raised(exc))

    assert response.status_code == 500
    assert response.body == GENERIC_500
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert record.error == type(exc).__name__  # type: ignore[attr-defined]
    # Raised outside functions/ and shared/: the innermost frame is the fallback.
    assert record.raised_at.startswith(f"{__name__}:")  # type: ignore[attr-defined]
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
    response = http_error(status, "x", {"Allow": "GET"})

    assert response.status_code == status
    assert response.body == {"code": code, "message": "x"}
    assert response.headers == {"Allow": "GET"}
