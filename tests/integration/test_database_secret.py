"""The database URL from AWS Secrets Manager (emulated by moto), used through the pooler.

Functions get only the secret's ARN. They read it on first use, keep it across warm
invocations, and after a failed login read it again (at most once per interval) and retry if
it changed, taking the whole URL from it. Secrets Manager itself is called with short timeouts
and two attempts at most. Whatever goes wrong, no response and no output shows the password,
even with the root logger at DEBUG. Every test that takes `secrets` runs twice: reading
through boto3, and through the Parameters and Secrets Lambda Extension (a stand-in over the
same moto, tests/fixtures/secrets_extension.py).
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any
from urllib.parse import quote, quote_plus

import boto3
import pytest

import shared._secrets
from functions.health.handler import handler as health_handler
from functions.items.handler import handler as items_handler
from infra.local_stack import LocalStack
from shared._engine import get_engine
from shared._errors import DatabaseConfigError, DatabaseSecretNotSetError
from shared._secrets import secrets_manager_client
from tests.fixtures.lambda_events import FunctionOutput, LambdaTestContext, body_of, http_event
from tests.fixtures.secrets_extension import SecretsExtension, serve_secrets_extension
from tests.fixtures.stack import TEST_PASSWORD, free_port, reset_caches

pytestmark = pytest.mark.usefixtures("as_user")  # items are a user's own rows

WRONG_PASSWORD = "rotated-away-hunter2"
PLACEHOLDER = "Q3vWm0ZpX8aT4nR7kY1cL6hB9dS2fJ5e"  # as GenerateSecretString makes it
FAILED_LOGIN = re.compile(r"ERROR .* password authentication failed")  # one per failed login


class Secrets:
    """A secret in moto's Secrets Manager, the functions' environment pointing at it (and at
    the extension's stand-in, if given), and a count of the reads that reached Secrets Manager."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, extension: SecretsExtension | None) -> None:
        self.client = boto3.client("secretsmanager")
        self.monkeypatch = monkeypatch
        self.extension = extension
        self.sdk_reads = 0
        secrets_manager_client().meta.events.register(
            "before-call.secrets-manager.GetSecretValue", self._count
        )

    def _count(self, **_: Any) -> None:
        self.sdk_reads += 1

    @property
    def reads(self) -> int:
        return self.sdk_reads if self.extension is None else self.extension.reads

    def use(self, value: str) -> str:
        arn: str = self.client.create_secret(Name="app/test/database-url", SecretString=value)[
            "ARN"
        ]
        self.monkeypatch.setenv("DATABASE_SECRET_ARN", arn)
        for name, setting in (self.extension.environment() if self.extension else {}).items():
            self.monkeypatch.setenv(name, setting)
        reset_caches()
        return arn

    def rotate(self, arn: str, value: str) -> None:
        self.client.put_secret_value(SecretId=arn, SecretString=value)

    def delete(self, arn: str) -> None:
        self.client.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)


@pytest.fixture(params=["sdk", "extension"])
def secrets(
    request: pytest.FixtureRequest, aws: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Secrets]:
    """Moto's Secrets Manager, read through boto3 or the extension's stand-in; DATABASE_URL
    unset, fresh client and caches before and after."""
    monkeypatch.delenv("DATABASE_URL")
    secrets_manager_client.cache_clear()
    with ExitStack() as serving:
        extension = None
        if request.param == "extension":
            client = boto3.client("secretsmanager")
            extension = serving.enter_context(serve_secrets_extension(client))
        secrets = Secrets(monkeypatch, extension)
        yield secrets
        monkeypatch.undo()
    secrets_manager_client.cache_clear()
    reset_caches()
    if extension is not None:  # the extension path never fell back to boto3
        assert secrets.sdk_reads == 0


@pytest.fixture
def interval_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the instance last read the secret longer ago than the refresh interval."""
    monkeypatch.setattr(shared._secrets, "MIN_REFRESH_INTERVAL_S", 0.0)


def pooler_url(stack: LocalStack, password: str) -> str:
    return stack.pooler_url().replace(quote(TEST_PASSWORD, safe=""), quote(password, safe=""))


def health() -> dict[str, Any]:
    return health_handler(http_event("GET /health"), LambdaTestContext())


def failed_logins(stack: LocalStack, since: int) -> int:
    with stack.pgbouncer_log.open(encoding="utf-8", errors="replace") as log:
        log.seek(since)
        return sum(bool(FAILED_LOGIN.search(line)) for line in log)


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
    assert secrets.reads == 1


@pytest.mark.usefixtures("interval_passed")
def test_rotated_password_costs_no_failed_request(stack: LocalStack, secrets: Secrets) -> None:
    arn = secrets.use(pooler_url(stack, WRONG_PASSWORD))
    stale = health()  # control: the stale password really fails through the pooler

    secrets.rotate(arn, stack.pooler_url())
    after_rotation = health()
    secrets.delete(arn)
    next_invocation = health()  # the refreshed URL was kept

    assert stale["statusCode"] == 503
    assert after_rotation["statusCode"] == 200
    assert next_invocation["statusCode"] == 200


def test_wrong_password_costs_one_failed_login_and_no_read_within_the_interval(
    stack: LocalStack, secrets: Secrets, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = secrets.use(pooler_url(stack, WRONG_PASSWORD))
    log_start = stack.pgbouncer_log.stat().st_size

    statuses = [health()["statusCode"] for _ in range(5)]
    time.sleep(0.2)  # PgBouncer writes its log asynchronously to us
    logins = failed_logins(stack, log_start)
    reads_while_wrong = secrets.reads
    secrets.rotate(arn, stack.pooler_url())
    within_interval = health()["statusCode"]  # the price of the bound: no read yet
    monkeypatch.setattr(shared._secrets, "MIN_REFRESH_INTERVAL_S", 0.0)
    after_interval = health()["statusCode"]

    assert statuses == [503] * 5
    assert logins == 5
    assert reads_while_wrong == 1  # the first read, none after
    assert within_interval == 503
    assert after_interval == 200
    assert secrets.reads == 2


@pytest.mark.usefixtures("interval_passed")
def test_whole_url_comes_from_the_refreshed_secret(stack: LocalStack, secrets: Secrets) -> None:
    arn = secrets.use(pooler_url(stack, WRONG_PASSWORD))
    assert health()["statusCode"] == 503

    secrets.rotate(arn, stack.direct_url())  # another port: Postgres itself, not the pooler
    response = health()
    with get_engine().connect() as conn:
        connected_port = conn.connection.driver_connection.info.port  # type: ignore[union-attr]

    assert response["statusCode"] == 200
    assert connected_port == stack.config.postgres_port


@pytest.mark.usefixtures("interval_passed")
def test_threads_that_refresh_at_once_read_the_secret_once(
    stack: LocalStack, secrets: Secrets
) -> None:
    arn = secrets.use(pooler_url(stack, WRONG_PASSWORD))
    assert health()["statusCode"] == 503
    reads_before = secrets.reads
    secrets.rotate(arn, stack.pooler_url())
    start = threading.Barrier(6)
    statuses: list[int] = []

    def request() -> None:
        start.wait()
        statuses.append(health()["statusCode"])

    threads = [threading.Thread(target=request) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [200] * 6
    assert secrets.reads - reads_before == 1


def test_placeholder_is_503_and_a_warm_instance_recovers_once_it_is_set(
    stack: LocalStack, secrets: Secrets
) -> None:
    arn = secrets.use(PLACEHOLDER)

    before = health()
    secrets.rotate(arn, stack.pooler_url())  # `make secret STAGE=...`
    after = health()

    assert before["statusCode"] == DatabaseSecretNotSetError.status_code == 503
    assert before["headers"]["Retry-After"]
    assert after["statusCode"] == 200


@pytest.mark.parametrize(
    "value",
    ['{"username": "postgres"}', f'{{"username": "postgres", "password": "{WRONG_PASSWORD}"'],
)
def test_malformed_secret_is_a_config_error_without_the_secret_text(
    secrets: Secrets, function_output: FunctionOutput, value: str
) -> None:
    secrets.use(value)

    response = health()
    output = function_output.read()

    assert response["statusCode"] == DatabaseConfigError.status_code
    assert isinstance(body_of(response)["message"], str)
    assert WRONG_PASSWORD not in response["body"]
    assert WRONG_PASSWORD not in output


def test_missing_secret_is_a_config_error(
    secrets: Secrets, function_output: FunctionOutput
) -> None:
    arn = secrets.use(PLACEHOLDER)
    secrets.delete(arn)

    response = health()

    assert response["statusCode"] == DatabaseConfigError.status_code
    assert "Traceback" not in function_output.read()


@pytest.fixture
def silent_secrets_manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """Secrets Manager's endpoint on a port that accepts connections and never answers; the
    times at which connections arrived, one per attempt."""
    attempts: list[float] = []
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            attempts.append(time.monotonic())
            accepted.append(connection)

    threading.Thread(target=accept, daemon=True).start()
    port = server.getsockname()[1]
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-central-1",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": f"http://127.0.0.1:{port}",
        "DATABASE_SECRET_ARN": "arn:aws:secretsmanager:eu-central-1:123456789012:secret:x",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DATABASE_URL")
    secrets_manager_client.cache_clear()
    reset_caches()
    yield attempts
    server.close()
    for connection in accepted:
        connection.close()
    monkeypatch.undo()
    secrets_manager_client.cache_clear()
    reset_caches()


def test_silent_secrets_manager_is_503_after_two_short_attempts(
    silent_secrets_manager: list[float],
) -> None:
    started = time.monotonic()
    response = health()
    elapsed = time.monotonic() - started

    assert response["statusCode"] == 503
    assert response["headers"]["Retry-After"]
    assert len(silent_secrets_manager) == shared._secrets.MAX_ATTEMPTS == 2
    # Two read timeouts and one backoff of at most a second, with slack for a busy machine.
    assert elapsed < 2 * shared._secrets.READ_TIMEOUT_S + 1 + 1.5


# --- the canary: no password anywhere, on any error path, with DEBUG logging ----------------

CANARY = "c@n:a/r%y?#&= +1"
"""A stored password with every character that URLs treat specially."""


def canary_forms(password: str) -> tuple[str, ...]:
    return (password, quote(password, safe=""), quote_plus(password), quote(password))


def url_with(stack: LocalStack, password: str, *, port: int | None = None) -> str:
    url = pooler_url(stack, password)
    return url if port is None else url.replace(str(stack.config.pooler_port), str(port))


ENV_CASES: dict[str, Callable[[LocalStack], str]] = {
    "url-unreachable": lambda stack: url_with(stack, CANARY, port=free_port()),
    "url-wrong-password": lambda stack: url_with(stack, CANARY),
    "url-malformed": lambda stack: f"postgresql://postgres:{CANARY}@127.0.0.1:5432/postgres",
}
SECRET_CASES: dict[str, Callable[[LocalStack], str]] = {
    "secret-rotated": lambda stack: url_with(stack, CANARY),
    "secret-unreachable": lambda stack: url_with(stack, CANARY, port=free_port()),
    "secret-malformed": lambda _: f'{{"username": "postgres", "password": "{CANARY}"}}',
    "secret-truncated": lambda _: f'{{"username": "postgres", "password": "{CANARY}"',
    "secret-url-unescaped": lambda _: f"postgresql://postgres:{CANARY}@127.0.0.1:1/postgres",
    "secret-placeholder": lambda _: PLACEHOLDER,
    "secret-missing": lambda stack: url_with(stack, CANARY),
}


@pytest.fixture
def debug_everywhere(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Root logger and the functions' own loggers at DEBUG, captured by caplog too."""
    for name in (None, "shared", "functions", "mangum", "service_undefined", "pytest"):
        caplog.set_level(logging.DEBUG, logger=name)
    caplog.set_level(logging.WARNING, logger="moto")  # the emulator, not deployed code
    return caplog


def invoke_both() -> list[dict[str, Any]]:
    return [
        health(),
        items_handler(http_event("GET /items/{item_id}"), LambdaTestContext()),
    ]


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    """Messages, arguments and extra fields of every record, not only the formatted text."""
    return caplog.text + "".join(repr(record.__dict__) for record in caplog.records)


def assert_no_password(responses: list[dict[str, Any]], output: str, logged: str) -> None:
    assert all(r["statusCode"] >= 500 for r in responses)
    for password in (CANARY, TEST_PASSWORD):
        for form in canary_forms(password):
            for response in responses:
                assert form not in repr(response)
            assert form not in output
            assert form not in logged


@pytest.mark.parametrize("case", ENV_CASES)
def test_no_password_in_output_or_responses_with_a_url(
    stack: LocalStack,
    monkeypatch: pytest.MonkeyPatch,
    debug_everywhere: pytest.LogCaptureFixture,
    function_output: FunctionOutput,
    case: str,
) -> None:
    monkeypatch.setenv("DATABASE_URL", ENV_CASES[case](stack))
    monkeypatch.setenv("DB_CONNECT_TIMEOUT", "2")
    reset_caches()
    try:
        responses = invoke_both()
    finally:
        monkeypatch.undo()
        reset_caches()

    assert_no_password(responses, function_output.read(), everything_logged(debug_everywhere))


@pytest.mark.parametrize("case", SECRET_CASES)
def test_no_password_in_output_or_responses_with_the_deployed_secret(
    stack: LocalStack,
    secrets: Secrets,
    interval_passed: None,
    debug_everywhere: pytest.LogCaptureFixture,
    function_output: FunctionOutput,
    case: str,
) -> None:
    arn = secrets.use(SECRET_CASES[case](stack))
    if case == "secret-missing":
        secrets.delete(arn)

    responses = invoke_both()

    assert_no_password(responses, function_output.read(), everything_logged(debug_everywhere))
    assert secrets.reads >= 1  # the secret path really ran


@pytest.mark.parametrize("secrets", ["sdk"], indirect=True)
def test_control_uncapped_botocore_logs_the_password_at_debug(
    stack: LocalStack,
    secrets: Secrets,
    debug_everywhere: pytest.LogCaptureFixture,
) -> None:
    """The leak the cap prevents, seen by the same capture: botocore prints response bodies."""
    secrets.use(url_with(stack, CANARY))
    debug_everywhere.set_level(logging.DEBUG, logger="botocore")

    health()

    assert any(form in everything_logged(debug_everywhere) for form in canary_forms(CANARY))
