"""PgBouncer in transaction mode with SCRAM logins over TLS, as strict as Supavisor in what it
lets by."""

from __future__ import annotations

import logging
import re
import signal
import time

import psycopg

from infra.local_stack import system
from infra.local_stack.certs import tls_files
from infra.local_stack.config import HOST, LocalStack, StackConfig, StackError, connect

logger = logging.getLogger(__name__)

Version = tuple[int, int, int]
PREPARED_STATEMENTS_SINCE = (1, 21, 0)
"""The first PgBouncer that can carry named prepared statements (`max_prepared_statements`)."""


def parse_pgbouncer_version(output: str) -> Version:
    """The version in `pgbouncer --version` output, whose first line is `PgBouncer 1.25.2`."""
    match = re.search(r"PgBouncer (\d+)\.(\d+)(?:\.(\d+))?", output)
    if match is None:
        raise StackError(f"cannot read PgBouncer's version from: {system.tail(output, 2)!r}")
    return int(match[1]), int(match[2]), int(match[3] or 0)


def pgbouncer_ini(config: StackConfig, version: Version) -> str:
    """PgBouncer's config; the userlist beside it holds the role's SCRAM secret.

    Clients must speak TLS (`client_tls_sslmode = require`), so no test or local run can skip
    the handshake every deployed request pays. PgBouncer's own hop to Postgres stays plain
    (`server_tls_sslmode` defaults to `prefer`, and Postgres offers no TLS): both listen on
    loopback only, as Supavisor's hop to Postgres is inside Supabase's network, out of a
    client's sight and control.
    """
    state_dir = config.state_dir
    tls = tls_files(state_dir)
    # Off, as on Supavisor; 1.24+ would carry psycopg's prepared statements, <1.21 never can.
    prepared = "max_prepared_statements = 0\n" if version >= PREPARED_STATEMENTS_SINCE else ""
    return f"""\
; Written by infra/local_stack on every start; edits are overwritten.
[databases]
* = host={HOST} port={config.postgres_port}

[pgbouncer]
listen_addr = {HOST}
listen_port = {config.pooler_port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {state_dir / "userlist.txt"}
pool_mode = transaction
{prepared}max_client_conn = {config.max_client_conn}
default_pool_size = {config.default_pool_size}
server_login_retry = {config.server_login_retry}
admin_users = {config.user}
stats_users = {config.user}
logfile = {state_dir / "pgbouncer.log"}
pidfile = {state_dir / "pgbouncer.pid"}
log_connections = 1
log_disconnections = 1
ignore_startup_parameters = extra_float_digits
client_tls_sslmode = require
client_tls_key_file = {tls.server_key}
client_tls_cert_file = {tls.server_cert}
"""


def running(config: StackConfig) -> bool:
    """Whether PgBouncer of this state dir runs."""
    return system.running_pid(config.state_dir / "pgbouncer.pid", "pgbouncer") is not None


def start(stack: LocalStack, pgbouncer: str, user: system.User | None, secret: str) -> None:
    """Write the config and a userlist with the SCRAM secret, then start PgBouncer in background.

    With the secret, never the password, PgBouncer logs in to Postgres by reusing the client's
    SCRAM proof, the pass-through Supavisor relies on too.
    https://www.pgbouncer.org/config.html#authentication-file-format
    """
    config = stack.config
    version = parse_pgbouncer_version(system.run([pgbouncer, "--version"]))
    (config.state_dir / "pgbouncer.pid").unlink(missing_ok=True)  # even a stale one stops it
    # Each field in double quotes, doubled inside, as PgBouncer reads them.
    fields = ['"' + field.replace('"', '""') + '"' for field in (config.user, secret)]
    system.write_file(config.state_dir / "userlist.txt", " ".join(fields) + "\n", user)
    ini = config.state_dir / "pgbouncer.ini"
    system.write_file(ini, pgbouncer_ini(config, version), user)
    logger.info("starting PgBouncer %d.%d.%d on %s:%d", *version, HOST, config.pooler_port)
    system.run([pgbouncer, "-d", str(ini)], user, log=stack.pgbouncer_log)


def stop(config: StackConfig) -> None:
    """Stop PgBouncer once running transactions end (SIGINT), or kill it after 10 s."""
    pid_file = config.state_dir / "pgbouncer.pid"
    system.stop_process(pid_file, "pgbouncer", signal.SIGINT, signal.SIGKILL)


def wait_for_login(stack: LocalStack, timeout: float = 15) -> None:
    """Wait for a real login through PgBouncer, since a listening socket says nothing of auth."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with connect(stack.pooler_url()) as connection:
                connection.execute("SELECT 1")
            return
        except psycopg.OperationalError as error:
            if time.monotonic() > deadline:
                log = system.log_tail(stack.pgbouncer_log)
                raise StackError(f"no login through PgBouncer: {error}\n{log}") from error
            time.sleep(0.2)
