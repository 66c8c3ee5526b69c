"""`make dev` itself (`python -m infra.dev`), run in a copy of the working tree, so that edits
made while it serves never touch the real sources.

It runs against the session's stack (the same state dir and ports, so it neither starts nor
stops one) with SUPABASE_URL in the copy's `.env` naming a stand-in for a real project: a JWKS
of its own, with its own key and issuer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from infra import PROJECT_ROOT
from infra.local_auth import SigningKey, access_token_claims
from infra.local_stack import LocalStack
from infra.offline import wait_until_serving
from infra.scaffold import round_trip_yaml
from tests.conftest import environment_outside_the_session
from tests.fixtures.stack import free_port, port_for
from tests.fixtures.tokens import Tokens, bearer, serve_tokens
from tests.fixtures.working_tree import copy_working_tree

PORT_OFFSET = 4
"""Beside the session's serverless offline (TEST_HTTP_PORT, TEST_LAMBDA_PORT)."""

START_TIMEOUT_S = 120.0
RESTART_TIMEOUT_S = 90.0
SERVING_AGAIN = "serving again on"
COLD_START_TIMEOUT_S = 60


@dataclass
class DevLog:
    """What `make dev` has printed, read on from where the last wait stopped."""

    path: Path
    offset: int = 0

    def wait_for(self, text: str, timeout_s: float) -> str:
        """Wait for a line containing `text`; return everything printed up to and with it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            printed = self.path.read_bytes()[self.offset :].decode(errors="replace")
            if (found := printed.find(text)) >= 0:
                end = printed.find("\n", found) + 1 or len(printed)
                self.offset += len(printed[:end].encode())
                return printed[:end]
            time.sleep(0.2)
        raise AssertionError(f"`make dev` printed no {text!r} within {timeout_s:.0f} s")


@dataclass
class Dev:
    """`make dev` running in `root`: an HTTP client for it, its log, the project it trusts."""

    root: Path
    client: httpx.Client
    log: DevLog
    project: Tokens
    local_auth_port: int
    env: dict[str, str]


def allow_slow_cold_starts(serverless_yml: Path) -> None:
    """Raise the copy's Lambda timeout: every restart makes each function's next request a
    cold start, which on a loaded 2-core CI machine can take longer than the deployed 10 s,
    and serverless offline kills a process that times out, so the next one starts cold too.
    What these tests prove does not depend on the timeout."""
    yaml = round_trip_yaml()
    config = yaml.load(serverless_yml)
    config["provider"]["timeout"] = COLD_START_TIMEOUT_S
    yaml.dump(config, serverless_yml)


@pytest.fixture(scope="module")
def dev(database: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    """`python -m infra.dev` in a copy, SUPABASE_URL in its `.env`, until the module ends."""
    work = tmp_path_factory.mktemp("dev")
    root, log_path = work / "repo", work / "dev.log"
    copy_working_tree(PROJECT_ROOT, root)
    allow_slow_cold_starts(root / "serverless.yml")
    http_port = port_for("TEST_HTTP_PORT") + PORT_OFFSET
    local_auth_port = free_port()
    env = environment_outside_the_session() | {
        "HTTP_PORT": str(http_port),
        "LAMBDA_PORT": str(port_for("TEST_LAMBDA_PORT") + PORT_OFFSET),
        "AUTH_PORT": str(local_auth_port),
        "LOCAL_STACK_STATE_DIR": str(database.config.state_dir),
        "LOCAL_POSTGRES_PORT": str(database.config.postgres_port),
        "LOCAL_POOLER_PORT": str(database.config.pooler_port),
        "LOCAL_DB_PASSWORD": database.config.password,
    }
    with serve_tokens() as project, log_path.open("wb") as output:
        (root / ".env").write_text(f"SUPABASE_URL={project.supabase_url}\n")
        process = subprocess.Popen(
            [sys.executable, "-m", "infra.dev"],
            cwd=root,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until_serving(f"http://127.0.0.1:{http_port}", process, START_TIMEOUT_S)
            with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=30) as client:
                yield Dev(root, client, DevLog(log_path), project, local_auth_port, env)
        finally:
            os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C: it stops serverless offline
            process.wait(timeout=60)


def test_tokens_of_the_project_in_supabase_url_are_accepted_and_the_local_keys_are_not(
    dev: Dev,
) -> None:
    # What `make token` would sign with in the copy, had SUPABASE_URL not been set.
    local_key = SigningKey.load_or_create(dev.root / ".local" / "auth" / "signing-key.json")
    local_issuer = f"http://127.0.0.1:{dev.local_auth_port}/auth/v1"
    local_token = local_key.sign(access_token_claims(local_issuer, str(uuid.uuid4())))

    projects = dev.client.get("/items", headers=bearer(dev.project.token()))
    locals_ = dev.client.get("/items", headers=bearer(local_token))
    make_token = subprocess.run(
        [sys.executable, "-m", "infra.local_auth", "token"],
        cwd=dev.root,
        env=dev.env,
        capture_output=True,
        text=True,
    )

    assert projects.status_code == 200, projects.text
    assert isinstance(projects.json()["items"], list), projects.text
    assert locals_.status_code == 401, locals_.text
    assert make_token.returncode == 1
    assert make_token.stdout == ""
    assert f"SUPABASE_URL is set ({dev.project.supabase_url})" in make_token.stderr


def test_an_edited_handler_answers_anew_after_the_restart_it_triggers(dev: Dev) -> None:
    handler = dev.root / "functions" / "health" / "handler.py"
    before = dev.client.get("/health")

    handler.write_text(handler.read_text().replace('"reachable"', '"reachable, edited"'))
    restarted = dev.log.wait_for(SERVING_AGAIN, RESTART_TIMEOUT_S)
    after = dev.client.get("/health")

    assert before.json()["database"] == "reachable"
    assert "functions/health/handler.py changed: restarting serverless offline" in restarted
    assert after.status_code == 200, after.text
    assert after.json()["database"] == "reachable, edited"


def test_a_route_added_to_serverless_yml_is_served_after_the_restart_it_triggers(
    dev: Dev,
) -> None:
    serverless_yml = dev.root / "serverless.yml"
    before = dev.client.get("/ready")

    routes = serverless_yml.read_text()
    health_route = "      - httpApi: GET /health\n"
    serverless_yml.write_text(
        routes.replace(health_route, f"{health_route}      - httpApi: GET /ready\n")
    )
    restarted = dev.log.wait_for(SERVING_AGAIN, RESTART_TIMEOUT_S)
    after = dev.client.get("/ready")

    assert health_route in routes
    assert before.status_code == 404
    assert "serverless.yml changed: restarting serverless offline" in restarted
    assert after.status_code == 200, after.text
    assert after.json()["status"] == "ok"


def test_a_function_scaffolded_while_serving_is_served(dev: Dev) -> None:
    before = dev.client.get("/ping")

    scaffold = subprocess.run(
        [sys.executable, "-m", "infra.scaffold", "ping", "--kind", "plain"],
        cwd=dev.root,
        env=dev.env,
        capture_output=True,
        text=True,
    )
    dev.log.wait_for(SERVING_AGAIN, RESTART_TIMEOUT_S)
    after = dev.client.get("/ping")

    assert scaffold.returncode == 0, scaffold.stderr
    assert before.status_code == 404
    assert after.status_code == 200, after.text
    assert "database_time" in after.json()
