"""The plain handlers, invoked as Lambda invokes them, against Postgres through the pooler.

`/health` is public; `/connections` answers only a service_role token, verified against the
session's JWKS served over HTTP (tests/fixtures/tokens.py). Every refusal is paired with the
genuine token, which gets the report: a check that were skipped would fail the pair.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from functions.connections.handler import handler as connections_handler
from functions.health.handler import handler as health_handler
from infra.local_stack import LocalStack
from shared._error_mapping import RETRY_AFTER_SECONDS
from shared._tokens import get_verifier
from tests.fixtures.lambda_events import FunctionOutput, LambdaTestContext, body_of, http_event
from tests.fixtures.stack import TEST_MAX_CONNECTIONS
from tests.fixtures.tokens import Tokens

PROBE_CONNECTIONS = 3


def test_health_answers_from_the_database() -> None:
    response = health_handler(http_event("GET /health"), LambdaTestContext())

    assert response["statusCode"] == 200
    assert response["headers"]["content-type"] == "application/json"
    assert body_of(response) == {"status": "ok", "database": "reachable"}


@pytest.fixture
def idle_probe_connections(stack: LocalStack) -> Iterator[str]:
    """Direct connections with a name of their own, sitting idle while the monitor looks."""
    name = "monitor-probe"
    connections = [
        psycopg.connect(stack.direct_url(), application_name=name, autocommit=True)
        for _ in range(PROBE_CONNECTIONS)
    ]
    try:
        yield name
    finally:
        for conn in connections:
            conn.close()


def connections(token: str | None, context: LambdaTestContext | None = None) -> dict[str, Any]:
    """GET /connections with `token` as the bearer token (none if None)."""
    return connections_handler(
        http_event("GET /connections", token=token), context or LambdaTestContext()
    )


def test_monitor_reports_usage_by_application(idle_probe_connections: str, tokens: Tokens) -> None:
    response = connections(tokens.service_role())
    report: dict[str, Any] = body_of(response)

    assert response["statusCode"] == 200
    assert report["max_connections"] == TEST_MAX_CONNECTIONS
    usage = {
        (row["application_name"], row["state"]): row["connections"]
        for row in report["by_application"]
    }
    assert usage[(idle_probe_connections, "idle")] == PROBE_CONNECTIONS
    # The monitor's own query is running through the pooler while it is counted.
    assert usage[("pytest", "active")] >= 1
    assert report["in_use"] == sum(usage.values())
    assert report["in_use"] >= PROBE_CONNECTIONS + 1
    assert (
        report["guidance"]["with_data_api"]["limit_connections"] == TEST_MAX_CONNECTIONS * 40 // 100
    )


def test_monitor_without_a_token_is_401_with_a_bearer_challenge(tokens: Tokens) -> None:
    refused = connections(None)
    allowed = connections(tokens.service_role())

    assert refused["statusCode"] == 401
    assert refused["headers"]["WWW-Authenticate"] == "Bearer"
    assert body_of(refused)["code"] == "not_authenticated"
    assert allowed["statusCode"] == 200


def test_monitor_refuses_a_user_token_with_403(tokens: Tokens) -> None:
    user = connections(tokens.token())
    anon = connections(tokens.token(role="anon"))
    service = connections(tokens.service_role())

    assert (user["statusCode"], anon["statusCode"]) == (403, 403)
    assert body_of(user)["code"] == "forbidden"
    assert "WWW-Authenticate" not in user["headers"]
    assert service["statusCode"] == 200


def test_monitor_refuses_a_forged_service_role_token(tokens: Tokens) -> None:
    """`require_service_role`'s wiring to the verifier; each kind of forgery is refused in
    tests/unit/test_tokens.py, where the verifier is checked."""
    forged = connections(tokens.forged("alg none", role="service_role"))
    genuine = connections(tokens.service_role())

    assert forged["statusCode"] == 401
    assert forged["headers"]["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    assert body_of(forged)["code"] == "invalid_token"
    assert genuine["statusCode"] == 200


@pytest.fixture
def stalled_jwks(tokens: Tokens) -> Iterator[Tokens]:
    """The session's JWKS answering only after 5 s, with no keys cached in this process."""
    get_verifier.cache_clear()
    tokens.endpoint.delay_s = 5
    try:
        yield tokens
    finally:
        tokens.endpoint.delay_s = 0
        get_verifier.cache_clear()


def test_monitor_answers_503_before_the_deadline_when_the_jwks_stalls(
    stalled_jwks: Tokens,
) -> None:
    context = LambdaTestContext(timeout_ms=1_500)  # a deadline of 1 s, under the 2 s timeout
    started = time.monotonic()

    response = connections(stalled_jwks.service_role(), context)

    took = time.monotonic() - started
    assert response["statusCode"] == 503
    assert response["headers"]["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert body_of(response)["code"] == "service_unavailable"
    assert 0.9 < took < 1.5


def test_no_token_appears_in_any_log_line_or_output(
    tokens: Tokens, function_output: FunctionOutput, caplog: pytest.LogCaptureFixture
) -> None:
    """A refusal, a 403 and a success, logged at DEBUG everywhere: no token, whole or in part.

    Each kind of forgery's refusal is checked for the same in tests/unit/test_tokens.py."""
    caplog.set_level(logging.DEBUG)
    sent = [tokens.forged("alg none", role="service_role"), tokens.token(), tokens.service_role()]

    statuses = {connections(token)["statusCode"] for token in sent}

    output = function_output.read() + caplog.text
    output += "".join(repr(record.__dict__) for record in caplog.records)
    assert statuses == {200, 401, 403}
    assert '"message":"access token rejected"' in output  # the refusals were logged
    # Each token's signature, and its payload, is specific to it; the header is not.
    fragments = {part for token in sent for part in token.split(".")[1:] if len(part) > 16}
    assert fragments
    assert [fragment for fragment in fragments if fragment in output] == []
