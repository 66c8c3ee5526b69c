"""What a stack is: its settings, and the URLs and logs of one that runs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg

from infra import PROJECT_ROOT

HOST = "127.0.0.1"
CA_FILE = "ca.pem"
"""The stack's CA certificate in its state dir (`infra.local_stack.certs` makes it)."""
PORT_VARIABLES = {"postgres_port": "LOCAL_POSTGRES_PORT", "pooler_port": "LOCAL_POOLER_PORT"}
"""The variable of the dev stack that sets each port, named by any message about that port."""


class StackError(RuntimeError):
    """The local stack could not start or stop; the message says what to do about it."""


@dataclass(frozen=True)
class StackConfig:
    """Where a stack keeps its files and how it is reached: one per caller, so none clash."""

    state_dir: Path
    postgres_port: int = 54422  # beside the Supabase CLI's 54320-54329, so both can run
    pooler_port: int = 6543  # Supavisor's transaction mode
    user: str = "postgres"
    password: str = field(default="postgres", repr=False)  # a throwaway database
    database: str = "postgres"
    """The database the URLs name: `start()` creates none, and Postgres comes with `postgres`."""
    max_connections: int = 100
    default_pool_size: int = 20
    max_client_conn: int = 400
    server_login_retry: int = 1
    """Seconds PgBouncer waits to log in again after a failed login (its default is 15)."""
    log_statements: bool = False

    def __post_init__(self) -> None:
        """Reject settings that would only fail later, deep inside initdb or PgBouncer."""
        ports = (self.postgres_port, self.pooler_port)
        if not all(0 < port < 65536 for port in ports) or ports[0] == ports[1]:
            raise ValueError(f"the two ports must differ and lie in 1-65535, not {ports}")
        # initdb reads the password as one line of a file; PgBouncer's userlist is line-based.
        if not self.password or "\n" in self.password or "\r" in self.password:
            raise ValueError("password must be non-empty and on one line")
        if self.server_login_retry < 0:
            raise ValueError("server_login_retry must not be negative")


@dataclass(frozen=True)
class LocalStack:
    """A running stack: the URLs to reach it and the logs to read when something goes wrong."""

    config: StackConfig

    def pooler_url(self) -> str:
        """The transaction-mode URL the application uses, like Supavisor's on port 6543.

        TLS with the server verified against the stack's CA, as a deployed function connects:
        PgBouncer refuses clients that do not speak TLS.
        """
        return self._url(self.config.pooler_port, self.config.database) + self._verify_full()

    def direct_url(self) -> str:
        """The direct URL migrations use, since DDL and session state need a real session.

        Plain TCP: Postgres listens on loopback only and serves no TLS, like the pooler's own
        hop to Postgres, which a deployed client never sees either.
        """
        return self._url(self.config.postgres_port, self.config.database) + "?sslmode=disable"

    def admin_url(self) -> str:
        """PgBouncer's admin console, for `SHOW POOLS` and friends while debugging pooling."""
        return self._url(self.config.pooler_port, "pgbouncer") + self._verify_full()

    @property
    def ca_file(self) -> Path:
        """The CA certificate that vouches for the pooler's server certificate."""
        return self.config.state_dir / CA_FILE

    def pooler_version(self) -> str:
        """The running pooler's own answer to `SHOW VERSION`, e.g. `PgBouncer 1.18.0`."""
        return str(self._admin("SHOW VERSION")[0][0])

    def pooler_setting(self, name: str) -> str | None:
        """A setting of the running pooler (`SHOW CONFIG`); None when it has no such setting."""
        return next((str(row[1]) for row in self._admin("SHOW CONFIG") if row[0] == name), None)

    @property
    def postgres_log(self) -> Path:
        """Postgres' log; with `log_statements` it shows every statement with app name and pid."""
        return self.config.state_dir / "postgres.log"

    @property
    def pgbouncer_log(self) -> Path:
        """PgBouncer's log, with every client login and logout."""
        return self.config.state_dir / "pgbouncer.log"

    def _admin(self, command: str) -> list[tuple[object, ...]]:
        with connect(self.admin_url()) as admin:
            return admin.execute(command).fetchall()

    def _verify_full(self) -> str:
        return f"?sslmode=verify-full&sslrootcert={quote(str(self.ca_file), safe='/')}"

    def _url(self, port: int, database: str) -> str:
        """A URL whose credentials survive any character, such as `@`, `:` or `/`."""
        user, password = quote(self.config.user, safe=""), quote(self.config.password, safe="")
        return f"postgresql://{user}:{password}@{HOST}:{port}/{quote(database, safe='')}"


def connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    """Connect for the stack's own checks, with the URL's TLS settings, leaving nothing prepared."""
    return psycopg.connect(url, connect_timeout=2, autocommit=True, prepare_threshold=None)


def config_from_env(environ: Mapping[str, str] | None = None) -> StackConfig:
    """The dev stack's settings from the environment, so `make` variables can change them."""
    env = os.environ if environ is None else environ
    ports = {}
    for setting, variable in PORT_VARIABLES.items():
        value = env.get(variable) or str(getattr(StackConfig, setting))
        if not value.isdigit():
            raise StackError(f"{variable} must be a port number, not {value!r}")
        ports[setting] = int(value)
    return StackConfig(
        state_dir=Path(env.get("LOCAL_STACK_STATE_DIR") or PROJECT_ROOT / ".local" / "dev"),
        postgres_port=ports["postgres_port"],
        pooler_port=ports["pooler_port"],
        password=env.get("LOCAL_DB_PASSWORD") or StackConfig.password,
    )
