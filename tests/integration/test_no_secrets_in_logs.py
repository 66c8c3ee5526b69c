"""No bearer token or request body reaches a log line, whatever Powertools' environment says.

Powertools reads POWERTOOLS_LOGGER_LOG_EVENT when a handler is decorated, at import; so each
function runs in a process of its own that starts with the loudest settings Powertools has
(log every event, DEBUG, its own debug output), is invoked with a token and a JSON body, and
must answer normally while printing neither.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from infra import PROJECT_ROOT
from tests.fixtures.lambda_events import http_event
from tests.fixtures.tokens import Tokens

LOUDEST_POWERTOOLS = {
    "POWERTOOLS_LOGGER_LOG_EVENT": "true",
    "POWERTOOLS_LOG_LEVEL": "DEBUG",
    "POWERTOOLS_DEBUG": "true",
    "POWERTOOLS_LOGGER_SAMPLE_RATE": "1",
}

# Imports the function's handler after the environment is set, invokes it once per event and
# writes the status codes to the file named last; whatever it logs goes to stdout and stderr.
INVOKE = """
import importlib, json, sys
from tests.fixtures.lambda_events import LambdaTestContext
handler = importlib.import_module(f"functions.{sys.argv[1]}.handler").handler
events = json.loads(open(sys.argv[2]).read())
statuses = [handler(event, LambdaTestContext())["statusCode"] for event in events]
open(sys.argv[3], "w").write(json.dumps(statuses))
"""


def run_function(name: str, events: list[dict[str, Any]], tmp_path: Path) -> tuple[list[int], str]:
    """Invoke function `name` with `events` in a fresh process; its statuses and its output."""
    events_file, statuses_file = tmp_path / "events.json", tmp_path / "statuses.json"
    events_file.write_text(json.dumps(events))
    finished = subprocess.run(
        [sys.executable, "-c", INVOKE, name, str(events_file), str(statuses_file)],
        cwd=PROJECT_ROOT,
        env=os.environ | LOUDEST_POWERTOOLS,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, output
    statuses: list[int] = json.loads(statuses_file.read_text())
    return statuses, output


def secret_body() -> dict[str, str]:
    return {"sku": f"SECRET-{uuid.uuid4().hex[:12]}", "name": f"body-{uuid.uuid4().hex}"}


@pytest.mark.parametrize(
    ("function", "route", "role", "expected"),
    [
        ("items", "POST /items", "authenticated", [201, 409]),
        ("connections", "GET /connections", "service_role", [200, 200]),
        ("health", "GET /health", "authenticated", [200, 200]),
    ],
)
def test_neither_token_nor_body_is_logged(
    function: str,
    route: str,
    role: str,
    expected: list[int],
    tokens: Tokens,
    tmp_path: Path,
) -> None:
    token = tokens.token(user_id=str(uuid.uuid4()), role=role)
    body = secret_body()
    # Twice: the second items create is a duplicate, so an error's logging is covered too.
    events = [http_event(route, body=body, token=token) for _ in range(2)]

    statuses, output = run_function(function, events, tmp_path)

    assert statuses == expected, output
    assert "Bearer" not in output
    assert token not in output
    for part in token.split("."):  # a header, claims or signature logged apart
        assert part not in output
    for value in body.values():
        assert value not in output
