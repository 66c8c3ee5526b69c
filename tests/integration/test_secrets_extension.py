"""Secrets read through the Parameters and Secrets Lambda Extension (a stand-in over moto).

The path costs no boto3 import, presents the session token, maps the extension's answers as
the boto3 path maps Secrets Manager's (gone or refused: 500; throttled, failing, silent,
unreachable: 503), and reads again after a SnapStart restore. The tests shared with the boto3
path (rotation, placeholder, bounds on re-reads, no password in output) are in
test_database_secret.py, which runs each on both paths.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

import shared._secrets
from functions.health.handler import handler as health_handler
from infra import PROJECT_ROOT
from infra.local_stack import LocalStack
from shared import _snapstart as snapstart
from shared._errors import ConfigurationError, DatabaseUnavailableError
from shared._secrets import (
    EXTENSION_PORT_VARIABLE,
    SESSION_TOKEN_VARIABLE,
    extension_configured,
    read_secret_string,
)
from tests.fixtures.lambda_events import LambdaTestContext, http_event
from tests.fixtures.secrets_extension import (
    SESSION_TOKEN,
    SecretsExtension,
    serve_secrets_extension,
)
from tests.fixtures.stack import free_port, reset_caches

SECRET_NAME = "app/test/extension"


@pytest.fixture
def extension(aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[SecretsExtension]:
    """The stand-in over moto, the functions pointed at it; DATABASE_URL unset."""
    client = boto3.client("secretsmanager")
    with serve_secrets_extension(client) as serving:
        for name, value in serving.environment().items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("DATABASE_URL")
        reset_caches()
        yield serving
        monkeypatch.undo()
    reset_caches()


def use_secret(extension: SecretsExtension, value: str, monkeypatch: pytest.MonkeyPatch) -> str:
    arn: str = extension.client.create_secret(Name=SECRET_NAME, SecretString=value)["ARN"]
    monkeypatch.setenv("DATABASE_SECRET_ARN", arn)
    reset_caches()
    return arn


def health() -> dict[str, Any]:
    return health_handler(http_event("GET /health"), LambdaTestContext())


def test_the_request_presents_the_session_token_and_names_the_secret(
    extension: SecretsExtension,
) -> None:
    arn = extension.client.create_secret(Name=SECRET_NAME, SecretString="v")["ARN"]

    value = read_secret_string(arn, "test secret")

    assert value == "v"
    assert extension.requests == [{"secret_id": arn, "token": SESSION_TOKEN, "faulted": None}]


def test_a_refused_token_is_a_configuration_error(
    extension: SecretsExtension, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = extension.client.create_secret(Name=SECRET_NAME, SecretString="v")["ARN"]
    monkeypatch.setenv(SESSION_TOKEN_VARIABLE, "another-instance's-token")

    with pytest.raises(ConfigurationError):
        read_secret_string(arn, "test secret")
    assert extension.reads == 0  # the control: the stand-in really checks the token


NOT_FOUND = '{"__type":"ResourceNotFoundException","message":"Secrets Manager can\'t find it."}'


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, NOT_FOUND, ConfigurationError),
        (400, '{"__type":"AccessDeniedException","message":"not authorized"}', ConfigurationError),
        (403, "Forbidden", ConfigurationError),
        (
            400,
            '{"__type":"ThrottlingException","message":"Rate exceeded"}',
            DatabaseUnavailableError,
        ),
        (429, "Too Many Requests", DatabaseUnavailableError),
        (500, '{"__type":"InternalFailure"}', DatabaseUnavailableError),
        (502, "Bad Gateway", DatabaseUnavailableError),
        (200, "not json", DatabaseUnavailableError),
    ],
)
def test_the_extensions_answers_map_as_secrets_managers_do(
    extension: SecretsExtension,
    caplog: pytest.LogCaptureFixture,
    status: int,
    body: str,
    error: type[Exception],
) -> None:
    extension.answer = (status, body)

    with pytest.raises(error) as caught:
        read_secret_string("any", "test secret")

    assert "not authorized" not in str(caught.value)  # no upstream text in what callers see
    [record] = [r for r in caplog.records if r.getMessage() == "test secret unreadable"]
    assert record.__dict__["status"] == status
    assert record.__dict__["via"] == "extension"


def test_a_missing_secret_is_a_500_from_moto_itself(extension: SecretsExtension) -> None:
    with pytest.raises(ConfigurationError):
        read_secret_string("arn:aws:secretsmanager:eu-central-1:123456789012:secret:gone", "x")

    assert extension.requests[0]["faulted"] is None  # moto's own error, not a canned answer


def test_a_silent_extension_is_a_503_within_the_timeout(
    extension: SecretsExtension, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared._secrets, "EXTENSION_TIMEOUT_S", 0.5)
    extension.stall.set()

    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError):
        read_secret_string("any", "test secret")
    elapsed = time.monotonic() - started

    assert 0.5 <= elapsed < 2.0
    assert len(extension.requests) == 1  # it was reached, and did not answer


def test_an_extension_that_is_not_there_is_a_503(
    extension: SecretsExtension, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(EXTENSION_PORT_VARIABLE, str(free_port()))

    with pytest.raises(DatabaseUnavailableError):
        read_secret_string("any", "test secret")
    assert extension.requests == []


def test_without_a_session_token_the_sdk_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """SnapStart sets no AWS_SESSION_TOKEN: the extension could not be asked."""
    monkeypatch.setenv(EXTENSION_PORT_VARIABLE, "2773")
    monkeypatch.setenv(SESSION_TOKEN_VARIABLE, "token")
    with_token = extension_configured()
    monkeypatch.delenv(SESSION_TOKEN_VARIABLE)

    assert with_token
    assert not extension_configured()


def test_after_a_snapstart_restore_the_secret_is_read_again(
    stack: LocalStack,
    extension: SecretsExtension,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    arn = use_secret(extension, stack.direct_url(), monkeypatch)
    before = health()
    extension.client.put_secret_value(SecretId=arn, SecretString=stack.pooler_url())
    warm = health()  # a warm instance keeps what it read
    reads_before_restore = extension.reads

    snapstart.refresh_after_restore()
    restored = health()

    assert [before["statusCode"], warm["statusCode"], restored["statusCode"]] == [200] * 3
    assert reads_before_restore == 1
    assert extension.reads == 2


IMPORTS_AFTER_A_REQUEST = """
import json, sys
from functions.health.handler import handler
from tests.fixtures.lambda_events import LambdaTestContext, http_event
response = handler(http_event("GET /health"), LambdaTestContext())
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("boto3", "botocore"))
print(json.dumps({"status": response["statusCode"], "aws_sdk": loaded}))
"""


def first_request_in_a_new_process(environment: dict[str, str]) -> dict[str, Any]:
    """A new process (a cold start) that serves one request: its status and the AWS SDK
    modules it loaded."""
    done = subprocess.run(
        [sys.executable, "-c", IMPORTS_AFTER_A_REQUEST],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_the_extension_path_never_imports_boto3(
    stack: LocalStack, extension: SecretsExtension, monkeypatch: pytest.MonkeyPatch
) -> None:
    """boto3 is importable here, so an import would show; the control takes the SDK path
    (its endpoint a closed port: the read fails, the import shows). Powertools imports the
    bare `botocore` package (its `__init__`, ~2 ms) to tag the user agent, on both paths."""
    use_secret(extension, stack.pooler_url(), monkeypatch)
    through_extension = first_request_in_a_new_process(dict(os.environ))
    monkeypatch.delenv(EXTENSION_PORT_VARIABLE)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", f"http://127.0.0.1:{free_port()}")
    through_sdk = first_request_in_a_new_process(dict(os.environ))

    assert through_extension["status"] == 200
    assert set(through_extension["aws_sdk"]) <= {"botocore"}
    assert through_sdk["status"] == 503
    assert {"boto3", "botocore.client"} <= set(through_sdk["aws_sdk"])
