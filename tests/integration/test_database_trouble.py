"""Database or pooler trouble answers 503 with Retry-After, fast, and leaks nothing.

Each case is real: a closed port, a server that accepts and never answers (connect timeout),
and PgBouncer refusing clients because it is full (its admin console lowers max_client_conn).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any
from urllib.parse import quote

import pytest

from functions.health.handler import handler as health_handler
from functions.items.handler import handler as items_handler
from infra.local_stack import LocalStack
from shared.errors import RETRY_AFTER_SECONDS
from shared.settings import get_settings
from tests.fixtures.lambda_events import LambdaTestContext, body_of, http_event
from tests.fixtures.pgbouncer import pooler_settings
from tests.fixtures.stack import TEST_PASSWORD, reset_caches

pytestmark = pytest.mark.usefixtures("as_user")  # items are a user's own rows

CONNECT_TIMEOUT_S = 2
SLACK_S = 1.5


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


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


INVOCATIONS: dict[str, Callable[[], dict[str, Any]]] = {
    "health": lambda: dict(health_handler(http_event("get_health"), LambdaTestContext())),
    "items-read": lambda: items_handler(http_event("get_item"), LambdaTestContext()),
    "items-write": lambda: items_handler(
        http_event("post_items", body={"sku": "TROUBLE-1", "name": "never stored"}),
        LambdaTestContext(),
    ),
}


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
    point_database_at: Callable[[str], None], capfd: pytest.CaptureFixture[str], invocation: str
) -> None:
    point_database_at(url_with_port(free_port()))

    response, elapsed = timed(INVOCATIONS[invocation])

    assert_unavailable(response, elapsed, "".join(capfd.readouterr()))


@pytest.mark.parametrize("invocation", INVOCATIONS)
def test_unresponsive_pooler_is_503_within_the_connect_timeout(
    point_database_at: Callable[[str], None], capfd: pytest.CaptureFixture[str], invocation: str
) -> None:
    with silent_server() as port:
        point_database_at(url_with_port(port))

        response, elapsed = timed(INVOCATIONS[invocation])

    assert_unavailable(response, elapsed, "".join(capfd.readouterr()))
    assert elapsed >= CONNECT_TIMEOUT_S - 0.5  # it did wait for the timeout, not fail early


def pooler_full(stack: LocalStack) -> AbstractContextManager[None]:
    """Lower PgBouncer's max_client_conn below its current clients, then restore it."""
    return pooler_settings(stack, max_client_conn=1)  # the admin connection is the one client


@pytest.mark.parametrize("invocation", INVOCATIONS)
def test_full_pooler_is_503(
    stack: LocalStack, capfd: pytest.CaptureFixture[str], invocation: str
) -> None:
    assert get_settings().database_url is not None

    with pooler_full(stack):
        response, elapsed = timed(INVOCATIONS[invocation])

    assert_unavailable(response, elapsed, "".join(capfd.readouterr()))
    recovered = INVOCATIONS["health"]()
    assert recovered["statusCode"] == 200
