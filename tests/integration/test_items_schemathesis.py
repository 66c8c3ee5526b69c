"""schemathesis against the items function: the API answers what its OpenAPI document says.

Every generated case (schema examples, coverage of boundaries and unsupported methods, and
fuzzing with valid and invalid data) goes through the real Lambda handler as an API Gateway
v2.0 event, so Mangum and the error boundary are exercised, against Postgres through the
pooler. `call_and_validate` runs every check schemathesis has, as `--checks all` does: no
5xx, documented status codes, content types, headers and bodies, valid data accepted,
invalid data refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import ignored_auth
from sqlalchemy import delete, func, select

from functions.items.handler import app, handler
from functions.items.models import Item
from shared._engine import transaction
from shared._identity import acting_as_login_role
from tests.fixtures.lambda_http import lambda_session
from tests.fixtures.tokens import Tokens

BASE_URL = "http://items.lambda"
MIN_CASES_PER_OPERATION = 200
"""Five operations, so at least 1,000 cases in all."""

schema = schemathesis.openapi.from_dict(app.openapi())


@pytest.fixture(scope="module")
def items_api() -> Iterator[requests.Session]:
    """HTTP to BASE_URL invokes the items handler; the rows the run creates, whoever owns them,
    are removed after by the tables' owner."""
    with acting_as_login_role(), transaction() as conn:
        last_id = conn.execute(select(func.coalesce(func.max(Item.id), 0))).scalar_one()
    session, _ = lambda_session(handler, BASE_URL)
    with session:
        yield session
    with acting_as_login_role(), transaction() as conn:
        conn.execute(delete(Item).where(Item.id > last_id))


@pytest.fixture(scope="module")
def user_token(tokens: Tokens) -> str:
    """One user's access token for the whole run, so each case sees that user's rows."""
    return tokens.token()


@pytest.fixture
def cases() -> Iterator[list[schemathesis.Case[Any]]]:
    """The cases one operation's test ran; fewer than the minimum fails the test."""
    seen: list[schemathesis.Case[Any]] = []
    yield seen
    assert len(seen) >= MIN_CASES_PER_OPERATION


@schema.parametrize()
@settings(
    max_examples=MIN_CASES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_items_api_answers_as_documented(
    case: schemathesis.Case[Any],
    items_api: requests.Session,
    cases: list[schemathesis.Case[Any]],
    user_token: str,
) -> None:
    cases.append(case)
    # Every case as one user, with a token the handler verifies, except those whose headers
    # are meant to be wrong: those keep what schemathesis made (no token, a malformed one), and
    # must be refused. `ignored_auth` sends its probes around the session, so they never reach
    # the handler; forged tokens are refused case by case in tests/unit/test_tokens.py.
    negative_headers = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
    case.call_and_validate(
        base_url=BASE_URL,
        session=items_api,
        headers=None if negative_headers else {"Authorization": f"Bearer {user_token}"},
        excluded_checks=[ignored_auth],
    )
