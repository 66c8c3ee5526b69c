"""`serverless offline` serving the functions over HTTP, against the test stack's pooler."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from infra.local_stack import LocalStack
from infra.offline import start_offline, stop_offline, wait_until_serving
from tests.fixtures.browser import PageServer
from tests.fixtures.stack import require_free
from tests.fixtures.tokens import Tokens

# serverless-offline's line for each request it hands to a function: `GET /health (λ: health)`.
INVOCATION = re.compile(r"^(\S+ \S+) \(λ: (.+)\)$")


@dataclass
class OfflineLog:
    """What serverless offline has printed, read on from where the last read stopped."""

    path: Path
    offset: int = 0

    def skip(self) -> None:
        """Forget what was printed so far."""
        self.offset = self.path.stat().st_size

    def invocations(self) -> list[tuple[str, str]]:
        """(request, function) for each function invocation printed since the last read."""
        with self.path.open("rb") as log:
            log.seek(self.offset)
            text = log.read().decode(errors="replace")
            self.offset = log.tell()
        found = (INVOCATION.match(line.strip()) for line in text.splitlines())
        return [(match[1], match[2]) for match in found if match]


@dataclass
class Offline:
    """The running serverless offline: an HTTP client for it, and its log."""

    client: httpx.Client
    log: OfflineLog


@pytest.fixture(scope="session")
def offline(
    database: LocalStack,
    tokens: Tokens,
    frontend: PageServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Offline]:
    """The functions as `make dev` serves them: they verify tokens against the session's JWKS,
    fetched over HTTP from their own processes, and browsers may call them from `frontend`'s
    pages only."""
    http_port = require_free("TEST_HTTP_PORT")
    base_url = f"http://127.0.0.1:{http_port}"
    log_path = tmp_path_factory.mktemp("offline") / "serverless-offline.log"
    with log_path.open("wb") as output:
        process = start_offline(
            database.pooler_url(),
            tokens.supabase_url,
            http_port,
            require_free("TEST_LAMBDA_PORT"),
            output,
            cors_origins=frontend.origin,
        )
        try:
            wait_until_serving(base_url, process, timeout_s=90)  # any answer, even a 404
            with httpx.Client(base_url=base_url, timeout=30) as client:
                yield Offline(client, OfflineLog(log_path))
        finally:
            stop_offline(process)


@pytest.fixture
def api(offline: Offline) -> httpx.Client:
    """An HTTP client for the functions."""
    return offline.client


@pytest.fixture
def offline_log(offline: Offline) -> OfflineLog:
    """serverless offline's log from the start of the test on."""
    offline.log.skip()
    return offline.log
