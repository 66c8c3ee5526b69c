"""`serverless offline` serving the functions over HTTP, against the test stack's pooler."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from infra.local_stack import LocalStack
from infra.offline import start_offline, stop_offline, wait_until_serving
from tests.fixtures.stack import require_free
from tests.fixtures.tokens import Tokens


@pytest.fixture(scope="session")
def api(database: LocalStack, tokens: Tokens) -> Iterator[httpx.Client]:
    """An HTTP client for the functions as `make dev` serves them: they verify tokens against
    the session's JWKS, fetched over HTTP from their own processes."""
    http_port = require_free("TEST_HTTP_PORT")
    base_url = f"http://127.0.0.1:{http_port}"
    process = start_offline(
        database.pooler_url(), tokens.supabase_url, http_port, require_free("TEST_LAMBDA_PORT")
    )
    try:
        wait_until_serving(f"{base_url}/health", process, timeout_s=90)
        with httpx.Client(base_url=base_url, timeout=30) as client:
            yield client
    finally:
        stop_offline(process)
