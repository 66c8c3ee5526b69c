"""`make dev`: start the local stack, migrate it, serve every function on localhost:3000.

Access tokens: with SUPABASE_URL set (environment or `.env`), the functions verify them
against that project's JWKS, so a frontend signed in to the real project works locally.
Unset, they verify against a local JWKS (http://127.0.0.1:54421, AUTH_PORT moves it) whose
key also signs `make token`'s tokens (`infra.local_auth`).

Edits are served without a restart by hand: serverless-offline keeps one Python process per
function that imported the handler once, and its `--reloadHandler` starts a new process, so
pays the whole import, for every request. Instead the files under functions/ and shared/ and
serverless.yml are polled, and a change restarts serverless offline once: the next request
runs the edited code, and a function or route added to serverless.yml is served.

Ctrl-C (or SIGTERM) stops serverless offline, the JWKS, then Postgres and PgBouncer: nothing
it started is left running.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from alembic.util import CommandError

from infra import PROJECT_ROOT, local_stack
from infra.local_auth import (
    DEFAULT_AUTH_PORT,
    JwksServer,
    SigningKey,
    configured_supabase_url,
    local_supabase_url,
)
from infra.migrate import upgrade
from infra.offline import CorsOriginsError, start_offline, stop_offline, wait_until_serving
from shared._errors import AuthConfigError
from shared._tokens import TokenVerifier

logger = logging.getLogger("dev")

WATCHED = ("functions", "shared", "serverless.yml")
"""What the functions run and how they are routed, relative to the project's root."""

POLL_INTERVAL_S = 0.5
START_TIMEOUT_S = 90.0
JWKS_CHECK_TIMEOUT_S = 5.0

type Snapshot = dict[Path, int]


class DevError(RuntimeError):
    """`make dev` cannot start; the message says what to change."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def source_snapshot(root: Path = PROJECT_ROOT) -> Snapshot:
    """Every watched file with its modification time: any edit, addition or removal changes it.

    Polling stat() of a few hundred files costs well under a millisecond per round and needs
    no dependency. Left out: bytecode caches, which the restarted functions write as they
    import (watched, they would restart it forever), and editors' hidden and backup files.
    """
    files: Snapshot = {}
    for name in WATCHED:
        path = root / name
        candidates = path.rglob("*") if path.is_dir() else [path]
        for candidate in candidates:
            relative = candidate.relative_to(root).parts
            if "__pycache__" in relative or any(part.startswith(".") for part in relative):
                continue
            if candidate.name.endswith("~"):
                continue
            with contextlib.suppress(FileNotFoundError):  # deleted between listing and stat
                if candidate.is_file():
                    files[candidate] = candidate.stat().st_mtime_ns
    return files


def changed_file(before: Snapshot, after: Snapshot, root: Path = PROJECT_ROOT) -> str | None:
    """One file that differs between the snapshots, relative to `root`, or None."""
    for path in sorted(before.keys() | after.keys()):
        if before.get(path) != after.get(path):
            return str(path.relative_to(root))
    return None


@contextlib.contextmanager
def token_verification() -> Iterator[str]:
    """The SUPABASE_URL the functions get: the configured project's, or a local JWKS served
    for as long as the context lasts. AuthConfigError for a URL the functions would refuse."""
    project = configured_supabase_url()
    if project and project.rstrip("/") != local_supabase_url():
        jwks_url = TokenVerifier(project).jwks_url  # refuses what the functions would refuse
        try:
            with urllib.request.urlopen(jwks_url, timeout=JWKS_CHECK_TIMEOUT_S):
                logger.info("verifying access tokens with %s (SUPABASE_URL)", jwks_url)
        except (OSError, http.client.HTTPException) as error:
            # Not fatal: the functions answer 503 until it can be fetched, as deployed.
            logger.warning("cannot fetch %s (SUPABASE_URL): %s", jwks_url, error)
        yield project
        return
    auth_port = int(os.environ.get("AUTH_PORT", DEFAULT_AUTH_PORT))
    key = SigningKey.load_or_create()
    try:
        jwks = JwksServer(lambda: {"keys": [key.public_jwk()]}, port=auth_port)
    except OSError as error:
        message = f"cannot serve the local JWKS on port {auth_port} (AUTH_PORT): {error}"
        raise DevError(message) from None
    try:
        logger.info("verifying access tokens with the local key (`make token` signs them)")
        yield jwks.supabase_url
    finally:
        jwks.close()


def serve(database_url: str, supabase_url: str, http_port: int, lambda_port: int) -> int:
    """Run serverless offline, restarted whenever a watched file changes, until interrupted.

    Returns its exit code if it stops by itself before any restart (a port already taken);
    after a restart it is left stopped until the next change, so a typo saved in
    serverless.yml does not end the session.
    """
    url = f"http://127.0.0.1:{http_port}"
    snapshot = source_snapshot()
    process = start_offline(database_url, supabase_url, http_port, lambda_port)
    restarted = reported_exit = False
    try:
        logger.info("serving on http://localhost:%d (Ctrl-C stops everything)", http_port)
        while True:
            time.sleep(POLL_INTERVAL_S)
            if process.poll() is not None and not restarted:
                return process.returncode
            if process.poll() is not None and not reported_exit:
                logger.error("serverless offline exited (code %d): save a fix", process.returncode)
                reported_exit = True
            current = source_snapshot()
            if (changed := changed_file(snapshot, current)) is None:
                continue
            # Let a burst settle (a branch switch, `make function`), so it restarts once.
            while True:
                time.sleep(POLL_INTERVAL_S)
                if (settled := source_snapshot()) == current:
                    break
                current = settled
            logger.info("%s changed: restarting serverless offline", changed)
            snapshot, restarted, reported_exit = current, True, False
            stop_offline(process)
            process = start_offline(database_url, supabase_url, http_port, lambda_port)
            with contextlib.suppress(RuntimeError, TimeoutError):  # reported on the next round
                wait_until_serving(url, process, START_TIMEOUT_S)
                logger.info("serving again on http://localhost:%d", http_port)
    except KeyboardInterrupt:
        return 0
    finally:
        stop_offline(process)


def serve_on_the_stack(supabase_url: str, http_port: int, lambda_port: int) -> int:
    """Start (or reuse) the local stack, migrate it, serve; stop the stack if started here."""
    config = local_stack.config_from_env()
    # A stack another `make dev` (or `make stack-up`) started is theirs to stop.
    started_here = not local_stack.is_running(config)
    try:
        stack = local_stack.start(config)
        upgrade(stack.direct_url())
        return serve(stack.pooler_url(), supabase_url, http_port, lambda_port)
    finally:
        if started_here:
            local_stack.stop(config)
            logger.info("stopped serverless offline, PgBouncer and Postgres")


def main() -> int:
    """Run until interrupted; return the exit code of serverless offline (0 on Ctrl-C)."""
    logging.basicConfig(level=logging.INFO, format="dev: %(message)s", stream=sys.stderr)
    # Explicitly for SIGINT too: a launcher that runs us in the background may have left it
    # ignored, and then Ctrl-C (or `kill -INT`) would stop nothing.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    http_port = int(os.environ.get("HTTP_PORT", "3000"))
    lambda_port = int(os.environ.get("LAMBDA_PORT", "3002"))
    try:
        with token_verification() as supabase_url:
            return serve_on_the_stack(supabase_url, http_port, lambda_port)
    except (
        local_stack.StackError,
        CommandError,
        AuthConfigError,
        CorsOriginsError,
        DevError,
    ) as error:
        # One line: a bad SUPABASE_URL, a taken port, a failed migration, no origin for browsers.
        logger.error("%s", error)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
