"""A throwaway local Postgres behind PgBouncer in transaction mode, shaped like Supabase's pooler.

Production traffic reaches Postgres through Supavisor's transaction pooler (port 6543, SCRAM
logins), which hands each transaction to whichever server connection is free. Code that only
works on a direct connection (prepared statements, plain `SET`, session advisory locks) passes
its tests against a plain Postgres and then fails in production, so `make dev` and the
integration tests run against this imitation instead, with no Docker:

- `pgbouncer`: `pool_mode=transaction`, TLS required of every client (`certs`: a CA of
  the stack's own, so its URLs say `sslmode=verify-full`), SCRAM logins with the role's
  SCRAM secret (never the password) in the userlist, `max_prepared_statements = 0` where
  PgBouncer knows it (1.21+), `server_login_retry = 1` so a restarted Postgres is usable
  again within a second, not 15.
- `postgres`: its own port for migrations, SCRAM, TCP on 127.0.0.1 only, durability off.
- `binaries`: found on PATH, where Debian or Homebrew put them, or installed with apt-get.
- `system`: as root, both servers run as `postgres` (or `nobody`), since both refuse root.

    python -m infra.local_stack {start|stop|status|url}   # make stack-up / stack-down

The dev stack reads LOCAL_STACK_STATE_DIR (.local/dev), LOCAL_POSTGRES_PORT (54422),
LOCAL_POOLER_PORT (6543) and LOCAL_DB_PASSWORD. Tests and the benchmark call `start()` and
`stop()` with ports and a state directory of their own, so they never touch the dev stack.
One caller at a time per state directory: nothing serialises two starts of the same one.
"""

from __future__ import annotations

import dataclasses
import logging

from infra.local_stack import pgbouncer, postgres
from infra.local_stack.binaries import ensure_binaries
from infra.local_stack.certs import ensure_certificates
from infra.local_stack.config import (
    PORT_VARIABLES,
    LocalStack,
    StackConfig,
    StackError,
    config_from_env,
)
from infra.local_stack.system import User, port_in_use, service_user, state_dir

__all__ = [
    "LocalStack",
    "StackConfig",
    "StackError",
    "config_from_env",
    "is_running",
    "located",
    "port_in_use",
    "start",
    "stop",
]

logger = logging.getLogger(__name__)


def start(config: StackConfig) -> LocalStack:
    """Start Postgres and PgBouncer, or return the stack already running from this state dir.

    Only a server that is down is started, so this also brings back one that was stopped.
    """
    binaries, user = ensure_binaries(), service_user()
    stack = LocalStack(_located(config, user, create=True))
    config = stack.config
    if not _up("Postgres", postgres.running(config), config, "postgres_port"):
        postgres.start(stack, binaries, user)
    secret = postgres.scram_secret(stack)
    _, renewed = ensure_certificates(config.state_dir, user)
    if renewed:  # a running PgBouncer still serves the certificate of the CA just replaced
        pgbouncer.stop(config)
    if not _up("PgBouncer", pgbouncer.running(config), config, "pooler_port"):
        pgbouncer.start(stack, binaries.pgbouncer, user, secret)
    pgbouncer.wait_for_login(stack)
    ports = (config.pooler_port, config.postgres_port)
    logger.info("ready: pooler on port %d, Postgres on %d, state in %s", *ports, config.state_dir)
    return stack


def stop(config: StackConfig) -> None:
    """Stop both servers and wait until they are gone; the data stays for the next start."""
    config = _located(config, service_user(), create=False)
    pgbouncer.stop(config)
    postgres.stop(config)


def is_running(config: StackConfig) -> bool:
    """Whether both servers of this state dir are up, without starting anything."""
    config = _located(config, service_user(), create=False)
    return postgres.running(config) and pgbouncer.running(config)


def located(config: StackConfig) -> LocalStack:
    """The stack of this state dir as it runs, where its files (the CA its URLs name) really are."""
    return LocalStack(_located(config, service_user(), create=False))


def _located(config: StackConfig, user: User | None, *, create: bool) -> StackConfig:
    return dataclasses.replace(config, state_dir=state_dir(config.state_dir, user, create=create))


def _up(server: str, running: bool, config: StackConfig, setting: str) -> bool:
    """Whether the server runs already; fails, naming what to do, if its port is another's."""
    port, variable = getattr(config, setting), PORT_VARIABLES[setting]
    if running and not port_in_use(port):
        message = f"{server} of this state dir runs on another port than {port}; stop it first"
        raise StackError(f"{message} (python -m infra.local_stack stop)")
    if not running and port_in_use(port):
        raise StackError(f"port {port} is taken by another program; choose one: {variable}=<port>")
    return running
