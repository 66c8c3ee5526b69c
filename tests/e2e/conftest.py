"""`serverless offline` serving the functions over HTTP, against the test stack's pooler."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from infra.local_stack import LocalStack
from infra.offline import start_offline, stop_offline, wait_until_serving

E2E_HTTP_PORT = int(os.environ.get("TEST_HTTP_PORT", "3300"))
E2E_LAMBDA_PORT = int(os.environ.get("TEST_LAMBDA_PORT", "3302"))


@pytest.fixture(scope="session")
def api(database: LocalStack) -> Iterator[httpx.Client]:
    """An HTTP client for the functions as `make dev` serves them."""
    base_url = f"http://127.0.0.1:{E2E_HTTP_PORT}"
    process = start_offline(database.pooler_url(), E2E_HTTP_PORT, E2E_LAMBDA_PORT)
    try:
        wait_until_serving(f"{base_url}/health", process, timeout_s=90)
        with httpx.Client(base_url=base_url, timeout=30) as client:
            yield client
    finally:
        stop_offline(process)
