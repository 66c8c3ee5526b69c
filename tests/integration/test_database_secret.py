"""The database URL from AWS Secrets Manager (emulated by moto), used through the pooler.

Functions get only the secret's ARN. They read it on first use, keep it across warm
invocations, and after a failed login read it once more and retry, so a rotated password
costs no failed request. A secret still holding the stack's placeholder is a 503; a missing or
malformed one is a configuration error (a generic 500). Neither response shows the secret.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import boto3
import pytest
from aws_lambda_powertools.utilities.parameters.base import clear_caches

from functions.health.handler import handler as health_handler
from infra.local_stack import LocalStack
from tests.fixtures.lambda_events import LambdaTestContext, body_of, http_event
from tests.fixtures.stack import TEST_PASSWORD, reset_caches

WRONG_PASSWORD = "rotated-away-hunter2"


class Secrets:
    """A secret in moto's Secrets Manager, and the functions' environment pointing at it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.client = boto3.client("secretsmanager")
        self.monkeypatch = monkeypatch

    def use(self, value: str) -> str:
        arn: str = self.client.create_secret(Name="app/test/database-url", SecretString=value)[
            "ARN"
        ]
        self.monkeypatch.setenv("DATABASE_SECRET_ARN", arn)
        reset_caches()
        return arn

    def rotate(self, arn: str, value: str) -> None:
        self.client.put_secret_value(SecretId=arn, SecretString=value)

    def delete(self, arn: str) -> None:
        self.client.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)


@pytest.fixture
def secrets(aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Secrets]:
    """Moto's Secrets Manager, DATABASE_URL unset, fresh caches before and after."""
    monkeypatch.delenv("DATABASE_URL")
    clear_caches()  # type: ignore[no-untyped-call]  # Powertools leaves it unannotated
    yield Secrets(monkeypatch)
    monkeypatch.undo()
    clear_caches()  # type: ignore[no-untyped-call]
    reset_caches()


def pooler_url(stack: LocalStack, password: str) -> str:
    return stack.pooler_url().replace(quote(TEST_PASSWORD, safe=""), quote(password, safe=""))


def health() -> dict[str, Any]:
    return dict(health_handler(http_event("get_health"), LambdaTestContext()))


@pytest.mark.parametrize("shape", ["url", "json-url", "rds-json"])
def test_url_is_read_from_the_secret_and_kept_across_invocations(
    stack: LocalStack, secrets: Secrets, shape: str
) -> None:
    url = stack.pooler_url()
    value = {
        "url": url,
        "json-url": f'{{"url": "{url}"}}',
        "rds-json": (
            f'{{"username": "postgres", "password": "{TEST_PASSWORD}", "host": "127.0.0.1",'
            f' "port": {stack.config.pooler_port}, "dbname": "postgres"}}'
        ),
    }[shape]
    arn = secrets.use(value)

    first = health()
    secrets.delete(arn)  # a warm invocation must not need the secret again
    second = health()

    assert first["statusCode"] == 200
    assert second["statusCode"] == 200


def test_rotated_password_costs_no_failed_request(stack: LocalStack, secrets: Secrets) -> None:
    arn = secrets.use(pooler_url(stack, WRONG_PASSWORD))
    stale = health()  # control: the stale password really fails through the pooler

    secrets.rotate(arn, stack.pooler_url())
    after_rotation = health()
    secrets.delete(arn)
    next_invocation = health()  # the refreshed credentials were kept

    assert stale["statusCode"] == 503
    assert after_rotation["statusCode"] == 200
    assert next_invocation["statusCode"] == 200


@pytest.mark.parametrize(
    ("value", "status", "code"),
    [
        (WRONG_PASSWORD, 503, "service_unavailable"),  # no URL at all: not set yet
        (f'{{"username": "postgres", "password": "{WRONG_PASSWORD}"', 500, "internal_error"),
    ],
)
def test_malformed_secret_is_an_error_without_the_secret_text(
    secrets: Secrets, capfd: pytest.CaptureFixture[str], value: str, status: int, code: str
) -> None:
    secrets.use(value)

    response = health()
    output = "".join(capfd.readouterr())

    assert response["statusCode"] == status
    assert ("Retry-After" in response["headers"]) == (status == 503)
    assert body_of(response)["code"] == code
    assert WRONG_PASSWORD not in response["body"]
    assert WRONG_PASSWORD not in output


def test_warm_instance_recovers_once_the_placeholder_is_replaced(
    stack: LocalStack, secrets: Secrets
) -> None:
    arn = secrets.use("GeneratedPlaceholderWithoutAnyUrl")  # as the stack creates it

    before = health()
    secrets.rotate(arn, stack.pooler_url())  # `make secret STAGE=...`
    after = health()

    assert before["statusCode"] == 503
    assert after["statusCode"] == 200


def test_missing_secret_is_a_configuration_error(
    secrets: Secrets,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    arn = secrets.use("placeholder")
    secrets.delete(arn)

    response = health()
    output = "".join(capfd.readouterr())

    assert response["statusCode"] == 500
    assert body_of(response) == {"code": "internal_error", "message": "Internal server error"}
    assert "configuration error" in [
        r.getMessage() for r in caplog.records if r.levelname == "ERROR"
    ]
    assert "Traceback" not in output
