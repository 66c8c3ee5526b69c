"""`make dev`: start the local stack, migrate it, serve every function on localhost:3000.

The functions verify access tokens against a local JWKS served where Supabase's local stack
serves it (http://127.0.0.1:54321/auth/v1/.well-known/jwks.json, AUTH_PORT moves it); `make
token` signs tokens with the same key (`infra.local_auth`). Ctrl-C (or SIGTERM) stops
serverless offline, the JWKS, then Postgres and PgBouncer: nothing it started is left running.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from types import FrameType

from alembic.util import CommandError

from infra import local_stack
from infra.local_auth import DEFAULT_AUTH_PORT, JwksServer, SigningKey
from infra.migrate import upgrade
from infra.offline import CorsOriginsError, start_offline, stop_offline

logger = logging.getLogger("dev")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    """Run until interrupted; return the exit code of serverless offline (0 on Ctrl-C)."""
    logging.basicConfig(level=logging.INFO, format="dev: %(message)s", stream=sys.stderr)
    # Explicitly for SIGINT too: a launcher that runs us in the background may have left it
    # ignored, and then Ctrl-C (or `kill -INT`) would stop nothing.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    http_port = int(os.environ.get("HTTP_PORT", "3000"))
    lambda_port = int(os.environ.get("LAMBDA_PORT", "3002"))
    config = local_stack.config_from_env()
    # A stack another `make dev` (or `make stack-up`) started is theirs to stop.
    started_here = not local_stack.is_running(config)
    auth_port = int(os.environ.get("AUTH_PORT", DEFAULT_AUTH_PORT))
    key = SigningKey.load_or_create()
    try:
        jwks = JwksServer(lambda: {"keys": [key.public_jwk()]}, port=auth_port)
    except OSError as error:
        logger.error("cannot serve the local JWKS on port %d (AUTH_PORT): %s", auth_port, error)
        return 1
    try:
        stack = local_stack.start(config)
        upgrade(stack.direct_url())
        process = start_offline(stack.pooler_url(), jwks.supabase_url, http_port, lambda_port)
        logger.info("serving on http://localhost:%d (Ctrl-C stops everything)", http_port)
        try:
            return process.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            stop_offline(process)
    except (local_stack.StackError, CommandError, CorsOriginsError) as error:
        # One line: a stack that cannot start, a failed migration, no origin for browsers.
        logger.error("%s", error)
        return 1
    finally:
        jwks.close()
        if started_here:
            local_stack.stop(config)
            logger.info("stopped serverless offline, the JWKS, PgBouncer and Postgres")


if __name__ == "__main__":
    sys.exit(main())
