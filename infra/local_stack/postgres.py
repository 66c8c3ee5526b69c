"""Postgres: its own port for migrations, SCRAM logins over TCP on 127.0.0.1 only, no fsync."""

from __future__ import annotations

import logging
import signal

import psycopg

from infra.local_stack import system
from infra.local_stack.binaries import Binaries
from infra.local_stack.config import HOST, LocalStack, StackConfig, StackError, connect

logger = logging.getLogger(__name__)

_CONF = "local_stack.conf"  # included last in initdb's postgresql.conf, so its settings win


def postgresql_conf(config: StackConfig) -> str:
    """This start's settings, on top of those initdb chose for this machine."""
    return f"""\
# Written by infra/local_stack on every start; edits are overwritten.
listen_addresses = '{HOST}'
port = {config.postgres_port}
unix_socket_directories = ''  # its default (/var/run/postgresql) is often not ours
max_connections = {config.max_connections}
password_encryption = 'scram-sha-256'
# The data is disposable, and durability is never what a test checks.
fsync = off
synchronous_commit = off
full_page_writes = off
log_line_prefix = '%m [%p] app=%a '
log_statement = '{"all" if config.log_statements else "none"}'
log_connections = {"on" if config.log_statements else "off"}
"""


def running(config: StackConfig) -> bool:
    """Whether Postgres of this state dir runs."""
    return system.running_pid(config.state_dir / "data" / "postmaster.pid", "postgres") is not None


def start(stack: LocalStack, binaries: Binaries, user: system.User | None) -> None:
    """Create the cluster on first use, then start Postgres with this start's settings."""
    config, data_dir = stack.config, stack.config.state_dir / "data"
    if not (data_dir / "PG_VERSION").is_file():
        logger.info("creating a Postgres cluster in %s", data_dir)
        password_file = config.state_dir / ".initdb-password"
        system.write_file(password_file, config.password + "\n", user)
        command = [binaries.initdb, f"--pgdata={data_dir}", f"--pwfile={password_file}"]
        command += [f"--username={config.user}", "--auth=scram-sha-256", "--no-locale"]
        try:
            system.run([*command, "--encoding=UTF8"], user)
        finally:
            password_file.unlink(missing_ok=True)
        with (data_dir / "postgresql.conf").open("a") as initdb_conf:
            initdb_conf.write(f"include_if_exists = '{_CONF}'\n")
    system.write_file(data_dir / _CONF, postgresql_conf(config), user)
    logger.info("starting Postgres on %s:%d", HOST, config.postgres_port)
    command = [binaries.pg_ctl, "start", "--wait", f"--pgdata={data_dir}"]
    system.run([*command, f"--log={stack.postgres_log}"], user, log=stack.postgres_log)


def stop(config: StackConfig) -> None:
    """A fast shutdown (SIGINT): open transactions roll back, clients are disconnected."""
    pid_file = config.state_dir / "data" / "postmaster.pid"
    system.stop_process(pid_file, "postgres", signal.SIGINT, signal.SIGQUIT)


def scram_secret(stack: LocalStack) -> str:
    """The role's SCRAM secret (initdb's `--auth=scram-sha-256`), for PgBouncer's userlist."""
    try:
        with connect(stack.direct_url()) as connection:
            query = "SELECT rolpassword FROM pg_authid WHERE rolname = current_user"
            return str(connection.execute(query).fetchall()[0][0])
    except psycopg.OperationalError as error:
        hint = ""
        if "password authentication failed" in str(error):
            state_dir = stack.config.state_dir
            hint = f"; {state_dir} was made with another password (LOCAL_DB_PASSWORD): set that, "
            hint += f"or stop the stack and delete {state_dir} to start afresh"
        raise StackError(f"cannot log in to Postgres directly: {error}{hint}") from error
