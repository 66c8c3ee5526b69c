"""Database or pooler trouble answers 503 with Retry-After, fast, and leaks nothing.

Each case is real: a closed port, a server that accepts and never answers (connect timeout),
PgBouncer refusing clients because it is full (its admin console lowers max_client_conn), and
a pooler whose certificate fails verification (another CA, or a host name it does not cover).
Each function of serverless.yml is asked through its read route; the write path (a read-write
session committed by the FastAPI dependency) through a route of the test's own.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from mangum import Mangum
from sqlalchemy import text

from infra.local_stack import LocalStack
from infra.local_stack.certs import ensure_certificates
from shared._boundary import lambda_boundary
from shared._dependencies import UserSessionDep
from shared._error_mapping import RETRY_AFTER_SECONDS, TLS_NOT_VERIFIED
from shared._fastapi_app import install_error_handlers
from shared._settings import get_settings
from tests.fixtures.lambda_events import LambdaTestContext, body_of, http_event
from tests.fixtures.pgbouncer import pooler_settings
from tests.fixtures.service import FUNCTIONS, HTTP_FUNCTIONS, handler_of, read_route
from tests.fixtures.stack import TEST_PASSWORD, free_port, reset_caches
from tests.fixtures.tokens import Tokens

# Items are a user's own rows; a new instance meets the trouble alike with either pool.
pytestmark = pytest.mark.usefixtures("as_user", "pool_mode")

CONNECT_TIMEOUT_S = 2
SLACK_S = 1.5


@contextmanager
def silent_server() -> Iterator[int]:
    """A TCP port whose connections are accepted by the kernel and never answered."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


@pytest.fixture
def point_database_at(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Point the functions at another URL, as a new Lambda instance would see it."""

    def point(url: str) -> None:
        monkeypatch.setenv("DATABASE_URL", url)
        monkeypatch.setenv("DB_CONNECT_TIMEOUT", str(CONNECT_TIMEOUT_S))
        reset_caches()

    yield point
    monkeypatch.undo()
    reset_caches()


def url_with_port(port: int) -> str:
    return f"postgresql://postgres:{quote(TEST_PASSWORD, safe='')}@127.0.0.1:{port}/postgres"


writes = FastAPI()
install_error_handlers(writes)


@writes.post("/writes")
async def write(session: UserSessionDep) -> dict[str, str]:
    """Opens the read-write transaction that the dependency commits."""
    await session.execute(text("SELECT 1"))
    return {"status": "committed"}


write_handler = lambda_boundary(Mangum(writes, lifespan="off"))


def reading(name: str) -> Callable[[str], dict[str, Any]]:
    handler, route = handler_of(FUNCTIONS[name]), read_route(FUNCTIONS[name])
    return lambda token: handler(http_event(route, token=token), LambdaTestContext())


INVOCATIONS: dict[str, Callable[[str], dict[str, Any]]] = {
    **{f"{name} read": reading(name) for name in HTTP_FUNCTIONS},
    "session write": lambda token: write_handler(
        http_event("POST /writes", body={}, token=token), LambdaTestContext()
    ),
}


@pytest.fixture
def invoke(invocation: str, tokens: Tokens) -> Callable[[], dict[str, Any]]:
    """The invocation with a service_role token, which every function accepts: the token is
    verified before the database is reached, so trouble shows as the 503 under test."""
    token = tokens.service_role()
    return lambda: INVOCATIONS[invocation](token)


def assert_unavailable(response: dict[str, Any], elapsed_s: float, output: str) -> None:
    headers = {name.lower(): value for name, value in response["headers"].items()}
    assert response["statusCode"] == 503
    assert headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    assert body_of(response)["code"] == "service_unavailable"
    assert elapsed_s < CONNECT_TIMEOUT_S + SLACK_S
    for secret in (TEST_PASSWORD, quote(TEST_PASSWORD, safe=""), "postgresql://", "Traceback"):
        assert secret not in response["body"]
        assert secret not in output


def timed(invoke: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    response = invoke()
    return response, time.monotonic() - started


@pytest.mark.parametrize("invocation", INVOCATIONS)
def test_unreachable_pooler_is_503(
    point_database_at: Callable[[str], None],
    capfd: pytest.CaptureFixture[str],
    invoke: Callable[[], dict[str, Any]],
) -> None:
    point_database_at(url_with_port(free_port()))

    response, elapsed = timed(invoke)

    assert_unavailable(response, elapsed, "".join(capfd.readouterr()))


@pytest.mark.parametrize("invocation", INVOCATIONS)
def test_unresponsive_pooler_is_503_within_the_connect_timeout(
    point_database_at: Callable[[str], None],
    capfd: pytest.CaptureFixture[str],
    invoke: Callable[[], dict[str, Any]],
) -> None:
    with silent_server() as port:
        point_database_at(url_with_port(port))

        response, elapsed = timed(invoke)

    assert_unavailable(response, elapsed, "".join(capfd.readouterr()))
    assert elapsed >= CONNECT_TIMEOUT_S - 0.5  # it did wait for the timeout, not fail early


def verified_url(stack: LocalStack, ca_file: Path, host: str) -> str:
    """The pooler's URL verified against `ca_file` for `host`, dialling 127.0.0.1 whatever the
    name (libpq's `hostaddr`), so only the certificate check can tell the cases apart."""
    url = url_with_port(stack.config.pooler_port).replace("@127.0.0.1:", f"@{host}:")
    return f"{url}?sslmode=verify-full&sslrootcert={quote(str(ca_file))}&hostaddr=127.0.0.1"


@pytest.mark.parametrize("invocation", INVOCATIONS)
@pytest.mark.parametrize("mistake", ["another CA", "another host name"])
def test_pooler_failing_verification_is_503(
    stack: LocalStack,
    point_database_at: Callable[[str], None],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    invoke: Callable[[], dict[str, Any]],
    tmp_path: Path,
    mistake: str,
) -> None:
    # The same URL with the stack's CA and a name its certificate covers is answered.
    point_database_at(verified_url(stack, stack.ca_file, "localhost"))
    assert invoke()["statusCode"] < 500
    other_ca = ensure_certificates(tmp_path, None)[0].ca_cert
    caplog.clear()
    if mistake == "another CA":
        point_database_at(verified_url(stack, other_ca, "localhost"))
    else:
        point_database_at(verified_url(stack, stack.ca_file, "pooler.example.com"))

    response, elapsed = timed(invoke)

    assert_unavailable(response, elapsed, "".join(capfd.readouterr()))
    [logged] = [r for r in caplog.records if r.getMessage() == "database server not verified"]
    assert logged.levelname == "ERROR"
    assert vars(logged)["reason"] == TLS_NOT_VERIFIED  # what to fix: retrying will not help
    for record in caplog.records:  # every field of every line, not only the formatted message
        fields = str(vars(record))
        assert quote(TEST_PASSWORD, safe="") not in fields
        assert TEST_PASSWORD not in fields
        assert "postgresql://" not in fields


def pooler_full(stack: LocalStack) -> AbstractContextManager[None]:
    """Lower PgBouncer's max_client_conn below its current clients, then restore it."""
    return pooler_settings(stack, max_client_conn=1)  # the admin connection is the one client


@pytest.mark.parametrize("invocation", INVOCATIONS)
def test_full_pooler_is_503(
    stack: LocalStack,
    capfd: pytest.CaptureFixture[str],
    invoke: Callable[[], dict[str, Any]],
) -> None:
    assert get_settings().database_url is not None

    with pooler_full(stack):
        response, elapsed = timed(invoke)

    assert_unavailable(response, elapsed, "".join(capfd.readouterr()))
    recovered = invoke()
    assert recovered["statusCode"] < 500
