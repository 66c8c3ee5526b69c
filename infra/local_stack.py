"""A throwaway local Postgres behind PgBouncer in transaction mode, shaped like Supabase's pooler.

Production traffic reaches Postgres through Supavisor's transaction pooler (port 6543, SCRAM
logins), which hands each transaction to whichever server connection is free. Code that only
works on a direct connection (prepared statements, plain `SET`, session advisory locks) passes
its tests against a plain Postgres and then fails in production, so `make dev` and the
integration tests run against this imitation instead:

- PgBouncer with `pool_mode=transaction` on the pooler port, `auth_type=scram-sha-256`, and the
  role's SCRAM secret (never the plaintext) in its userlist: PgBouncer then logs in to Postgres
  by reusing the client's SCRAM proof, the pass-through Supavisor also relies on.
  https://www.pgbouncer.org/config.html#authentication-file-format
- `max_prepared_statements = 0` wherever PgBouncer knows the setting (1.21+; 1.24+ turns it on
  by default). With it on, PgBouncer carries psycopg's named prepared statements (libpq 17+)
  and code that prepares would pass here; Supavisor leaves them off unless asked and RDS Proxy
  pins the session on them, so the stack stays as strict as the strictest of them.
  PgBouncer 1.18 (Debian 12) has no such support at all, which is just as strict.
- `server_login_retry = 1`: after Postgres restarts, PgBouncer's default waits 15 s before it
  tries to log in again, turning a restart of a fraction of a second into 15 s of failures.
- Postgres on its own port for migrations (Supabase local uses 54322), `scram-sha-256` in
  pg_hba, TCP on 127.0.0.1 only, no Unix socket (so nothing needs /var/run/postgresql).
- `fsync`, `synchronous_commit` and `full_page_writes` off: the data is disposable, tests are
  faster, and durability is never what a test checks.
- Postgres and PgBouncer refuse to run as root, so under root (CI containers, dev containers)
  both run as the `postgres` user, or `nobody`, and the state directory moves to /tmp when that
  user cannot reach the requested one.

Run it with `python -m infra.local_stack {start|stop|status|url}`; tests call `start()` and
`stop()` with their own ports and state directory so they never touch the dev stack.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import logging
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from infra import PROJECT_ROOT

__all__ = [
    "DEFAULT_STATE_DIR",
    "Binaries",
    "LocalStack",
    "StackConfig",
    "StackError",
    "config_from_env",
    "find_binaries",
    "is_running",
    "main",
    "parse_pgbouncer_version",
    "pgbouncer_ini",
    "pgbouncer_version",
    "port_in_use",
    "start",
    "stop",
]

logger = logging.getLogger(__name__)

DEFAULT_STATE_DIR = PROJECT_ROOT / ".local" / "dev"
DEFAULT_POSTGRES_PORT = 54322
DEFAULT_POOLER_PORT = 6543
DEFAULT_PASSWORD = "postgres"  # a throwaway local database, as in Supabase local

_HOST = "127.0.0.1"
_LOGIN_TIMEOUT_S = 15.0
_STOP_TIMEOUT_S = 10.0
_LOG_TAIL_LINES = 20
_PG_VERSIONS = range(18, 13, -1)  # newest first; 14 is the oldest still supported upstream
_HOMEBREW_PREFIXES = ("opt/homebrew", "usr/local")  # Apple silicon, Intel
_PG_CONF_NAME = "local_stack.conf"
_PG_CONF_INCLUDE = f"include_if_exists = '{_PG_CONF_NAME}'"
_APT_PACKAGES = {"postgres": "postgresql", "pgbouncer": "pgbouncer"}
PREPARED_STATEMENTS_SINCE = (1, 21, 0)
"""The first PgBouncer that can carry named prepared statements (`max_prepared_statements`)."""

Version = tuple[int, int, int]


class StackError(RuntimeError):
    """The local stack could not start or stop; the message says what to do about it."""


@dataclass(frozen=True)
class StackConfig:
    """Where the stack keeps its files and how it is reached; separate per caller to never clash."""

    state_dir: Path
    postgres_port: int = DEFAULT_POSTGRES_PORT
    pooler_port: int = DEFAULT_POOLER_PORT
    user: str = "postgres"
    password: str = field(default=DEFAULT_PASSWORD, repr=False)
    database: str = "postgres"
    max_connections: int = 100
    default_pool_size: int = 20
    max_client_conn: int = 400
    server_login_retry: int = 1
    """Seconds PgBouncer waits before logging in to Postgres again after a failed login."""
    log_statements: bool = False

    def __post_init__(self) -> None:
        """Reject settings that would only fail later, deep inside initdb or PgBouncer."""
        for name, port in (
            ("postgres_port", self.postgres_port),
            ("pooler_port", self.pooler_port),
        ):
            if not 1 <= port <= 65535:
                raise ValueError(f"{name} must be between 1 and 65535, not {port}")
        if self.postgres_port == self.pooler_port:
            raise ValueError("postgres_port and pooler_port must differ")
        # initdb reads the password as one line of a file; PgBouncer's userlist is line-based.
        if not self.password or "\n" in self.password or "\r" in self.password:
            raise ValueError("password must be non-empty and on one line")
        if not self.user or not self.database:
            raise ValueError("user and database must be non-empty")
        if self.server_login_retry < 0:
            raise ValueError("server_login_retry must not be negative")


@dataclass(frozen=True)
class LocalStack:
    """A running stack: the URLs to reach it and the logs to read when something goes wrong."""

    config: StackConfig

    def pooler_url(self) -> str:
        """The transaction-mode URL the application uses, like Supavisor's on port 6543."""
        return self._url(self.config.pooler_port, self.config.database)

    def direct_url(self) -> str:
        """The direct URL migrations use, since DDL and session state need a real session."""
        return self._url(self.config.postgres_port, self.config.database)

    def admin_url(self) -> str:
        """PgBouncer's admin console, for `SHOW POOLS` and friends while debugging pooling."""
        return self._url(self.config.pooler_port, "pgbouncer")

    def pooler_version(self) -> str:
        """The running pooler's own answer to `SHOW VERSION`, e.g. `PgBouncer 1.18.0`."""
        with _connect(self.admin_url(), timeout=5) as admin:
            row = admin.execute("SHOW VERSION").fetchone()
        return str(row[0]) if row else "unknown"

    def pooler_setting(self, name: str) -> str | None:
        """A setting of the running pooler (`SHOW CONFIG`); None when it has no such setting."""
        with _connect(self.admin_url(), timeout=5) as admin:
            rows = admin.execute("SHOW CONFIG").fetchall()
        return next((str(row[1]) for row in rows if row[0] == name), None)

    @property
    def postgres_log(self) -> Path:
        """Postgres' log; with `log_statements` it shows every statement with app name and pid."""
        return self.config.state_dir / "postgres.log"

    @property
    def pgbouncer_log(self) -> Path:
        """PgBouncer's log, with every client login and logout."""
        return self.config.state_dir / "pgbouncer.log"

    def _url(self, port: int, database: str) -> str:
        """Build a URL whose credentials survive any character, such as `@`, `:` or `/`."""
        user = quote(self.config.user, safe="")
        password = quote(self.config.password, safe="")
        return f"postgresql://{user}:{password}@{_HOST}:{port}/{quote(database, safe='')}"


@dataclass(frozen=True)
class _ServiceUser:
    """The unprivileged account the servers run as when we are root, since both refuse root."""

    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class Binaries:
    """Where the server programs live, which differs between Debian, Homebrew and source builds."""

    pg_bindir: Path
    pgbouncer: Path

    @property
    def initdb(self) -> str:
        """initdb from the same installation as pg_ctl, so the data directory format matches."""
        return str(self.pg_bindir / "initdb")

    @property
    def pg_ctl(self) -> str:
        """pg_ctl, which knows how to wait for Postgres to accept connections."""
        return str(self.pg_bindir / "pg_ctl")


# --- public API -----------------------------------------------------------------------------


def config_from_env(environ: Mapping[str, str] | None = None) -> StackConfig:
    """Read the dev stack's settings from the environment, so `make` variables can change them."""
    env = os.environ if environ is None else environ
    return StackConfig(
        state_dir=Path(env.get("LOCAL_STACK_STATE_DIR") or DEFAULT_STATE_DIR),
        postgres_port=_port_from_env(env, "LOCAL_POSTGRES_PORT", DEFAULT_POSTGRES_PORT),
        pooler_port=_port_from_env(env, "LOCAL_POOLER_PORT", DEFAULT_POOLER_PORT),
        password=env.get("LOCAL_DB_PASSWORD") or DEFAULT_PASSWORD,
    )


def _port_from_env(env: Mapping[str, str], name: str, default: int) -> int:
    """A port from the environment, named in the error when it is not a number."""
    value = env.get(name) or str(default)
    if not value.isdigit():
        raise StackError(f"{name} must be a port number, not {value!r}")
    return int(value)


def start(config: StackConfig) -> LocalStack:
    """Start Postgres and PgBouncer, or return the stack already running from this state dir."""
    binaries = _ensure_binaries()
    service_user = _service_user()
    state_dir = _resolve_state_dir(config.state_dir, service_user, create=True)
    stack = LocalStack(dataclasses.replace(config, state_dir=state_dir))
    with _locked(state_dir, service_user):
        postgres_running, pgbouncer_running = _check_ports(stack, binaries, service_user)
        if not postgres_running:
            _start_postgres(stack, binaries, service_user)
        secret = _prepare_database(stack)
        if not pgbouncer_running:
            _start_pgbouncer(stack, binaries, service_user, secret)
        _wait_for_login(stack.pooler_url(), stack.pgbouncer_log, "PgBouncer")
    logger.info(
        "ready: pooler on %s:%d (transaction mode), Postgres on %s:%d, state in %s",
        _HOST,
        config.pooler_port,
        _HOST,
        config.postgres_port,
        state_dir,
    )
    return stack


def stop(config: StackConfig) -> None:
    """Stop both servers and wait until they are gone; the data stays for the next start."""
    service_user = _service_user()
    state_dir = _resolve_state_dir(config.state_dir, service_user, create=False)
    if not state_dir.is_dir():
        return
    with _locked(state_dir, service_user):
        _stop_pgbouncer(state_dir)
        _stop_postgres(state_dir, service_user)


def is_running(config: StackConfig) -> bool:
    """Tell whether both servers of this state dir are up, without starting anything."""
    service_user = _service_user()
    state_dir = _resolve_state_dir(config.state_dir, service_user, create=False)
    if not state_dir.is_dir():
        return False
    binaries = find_binaries()
    if binaries is None:
        return False
    postgres_up = _postgres_pid(state_dir / "data", binaries, service_user) is not None
    return postgres_up and _pgbouncer_pid(state_dir) is not None


# --- binaries -------------------------------------------------------------------------------


def _ensure_binaries() -> Binaries:
    """Find the servers, installing them with apt when we are root on Debian, as CI images are."""
    binaries = find_binaries()
    if binaries is not None:
        return binaries
    missing = _missing_programs()
    apt_get = shutil.which("apt-get")
    if os.geteuid() != 0 or apt_get is None:
        raise StackError(f"{' and '.join(missing)} not found; install with: {_install_command()}")
    packages = [_APT_PACKAGES[program] for program in missing]
    logger.info("installing %s with apt-get", " ".join(packages))
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        [apt_get, "update"],
        [apt_get, "install", "-y", "--no-install-recommends", *packages],
    ):
        returncode, output = _run(command, cwd=Path("/"), env=env, timeout=1800)
        if returncode != 0:
            raise StackError(
                f"`{' '.join(command)}` failed (exit {returncode}):\n{_last_lines(output)}"
            )
    binaries = find_binaries()
    if binaries is None:
        raise StackError(
            f"{' and '.join(_missing_programs())} still not found after apt-get install"
        )
    return binaries


def find_binaries(root: Path = Path("/"), search_path: str | None = None) -> Binaries | None:
    """Both programs, or None when either is missing.

    `search_path` is the PATH to look on (default: the process's); `root` is where Debian's
    and Homebrew's fixed locations are looked for, so tests can hand in a fake tree.
    """
    pg_bindir = _find_pg_bindir(root, search_path)
    pgbouncer = _find_pgbouncer(root, search_path)
    if pg_bindir is None or pgbouncer is None:
        return None
    return Binaries(pg_bindir=pg_bindir, pgbouncer=pgbouncer)


def _missing_programs() -> list[str]:
    """Which of the two programs are absent, to install only those."""
    missing = []
    if _find_pg_bindir() is None:
        missing.append("postgres")
    if _find_pgbouncer() is None:
        missing.append("pgbouncer")
    return missing


def _find_pg_bindir(root: Path = Path("/"), search_path: str | None = None) -> Path | None:
    """Postgres' server bindir; Debian and Homebrew keep it off PATH, so look where they put it.

    Homebrew's `postgresql@16` (and 14 to 18) is keg-only: it lives in
    `/opt/homebrew/opt/postgresql@16/bin` (Apple silicon) or `/usr/local/opt/...` (Intel)
    and is never linked onto PATH.
    """
    pg_config = shutil.which("pg_config", path=search_path)
    if pg_config is not None:
        # Debian's pg_config may belong to libpq-dev of another major version, without a server.
        returncode, output = _run([pg_config, "--bindir"], cwd=Path("/"))
        if returncode == 0 and (Path(output.strip()) / "initdb").is_file():
            return Path(output.strip())
    candidates = [root / f"usr/lib/postgresql/{version}/bin" for version in _PG_VERSIONS]
    candidates += [
        root / prefix / f"opt/postgresql@{version}/bin"
        for version in _PG_VERSIONS
        for prefix in _HOMEBREW_PREFIXES
    ]
    for candidate in candidates:
        if (candidate / "initdb").is_file():
            return candidate
    initdb = shutil.which("initdb", path=search_path)
    return Path(initdb).parent if initdb is not None else None


def _find_pgbouncer(root: Path = Path("/"), search_path: str | None = None) -> Path | None:
    """PgBouncer: Debian installs it in /usr/sbin, outside a normal user's PATH; Homebrew
    links it into its bin directory, which a shell started outside Homebrew may not have."""
    found = shutil.which("pgbouncer", path=search_path)
    if found is not None:
        return Path(found)
    candidates = [root / "usr/sbin/pgbouncer"]
    candidates += [root / prefix / "bin/pgbouncer" for prefix in _HOMEBREW_PREFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def parse_pgbouncer_version(output: str) -> Version:
    """The version in `pgbouncer --version` output, whose first line is `PgBouncer 1.25.2`."""
    match = re.search(r"PgBouncer (\d+)\.(\d+)(?:\.(\d+))?", output)
    if match is None:
        raise StackError(f"cannot read PgBouncer's version from: {_last_lines(output, 2)!r}")
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def pgbouncer_version(pgbouncer: Path) -> Version:
    """The version of this PgBouncer binary."""
    returncode, output = _run([str(pgbouncer), "--version"], cwd=Path("/"))
    if returncode != 0:
        raise StackError(f"`{pgbouncer} --version` failed (exit {returncode}):\n{output}")
    return parse_pgbouncer_version(output)


def _install_command() -> str:
    """The one command that installs both programs on this kind of machine."""
    if platform.system() == "Darwin":
        return "brew install postgresql@16 pgbouncer"
    if shutil.which("apt-get") is not None:
        return "sudo apt-get install -y postgresql pgbouncer"
    return "your package manager, e.g. `sudo dnf install postgresql-server pgbouncer`"


# --- running things as the service user ------------------------------------------------------


def _service_user() -> _ServiceUser | None:
    """Who runs the servers: None means ourselves, since only root has to hand them off."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return _ServiceUser(name=name, uid=entry.pw_uid, gid=entry.pw_gid)
    raise StackError("running as root, but neither a `postgres` nor a `nobody` user exists")


def _run(
    args: Sequence[str],
    *,
    cwd: Path,
    as_user: _ServiceUser | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> tuple[int, str]:
    """Run a command and return its exit code and output, optionally as the service user."""
    # A temporary file, not a pipe: daemons (pg_ctl's postmaster, `pgbouncer -d`) may inherit
    # the output descriptors, and reading a pipe would then wait for them to exit.
    with tempfile.TemporaryFile() as output:
        try:
            completed = subprocess.run(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                timeout=timeout,
                check=False,
                user=as_user.uid if as_user else None,
                group=as_user.gid if as_user else None,
                extra_groups=[] if as_user else None,
            )
        except (OSError, subprocess.SubprocessError) as error:
            raise StackError(f"`{' '.join(args)}` could not run: {error}") from error
        output.seek(0)
        return completed.returncode, output.read().decode(errors="replace")


def _resolve_state_dir(requested: Path, user: _ServiceUser | None, *, create: bool) -> Path:
    """The state dir itself, or a /tmp stand-in when the service user cannot reach it."""
    requested = requested.expanduser().resolve()
    if create:
        try:
            requested.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as error:
            raise StackError(f"cannot create the state dir {requested}: {error}") from error
    if user is None:
        return requested
    if create:
        _chown_tree(requested, user)
    if requested.is_dir() and _reachable_by(requested, user):
        return requested
    digest = hashlib.sha1(str(requested).encode(), usedforsecurity=False).hexdigest()[:12]
    fallback = Path("/tmp") / f"local-stack-{digest}"
    if not create:
        return fallback if fallback.is_dir() else requested
    logger.info(
        "%s is not reachable by user %s (a parent directory is closed to it); using %s",
        requested,
        user.name,
        fallback,
    )
    fallback.mkdir(mode=0o700, exist_ok=True)
    details = fallback.lstat()
    # /tmp is shared: refuse a directory someone else planted there for us to use.
    if fallback.is_symlink() or details.st_uid not in (0, user.uid):
        raise StackError(f"{fallback} exists and is not ours; remove it and retry")
    _chown_tree(fallback, user)
    if not _reachable_by(fallback, user):
        raise StackError(f"user {user.name} cannot write to {fallback}")
    return fallback


def _reachable_by(path: Path, user: _ServiceUser) -> bool:
    """Ask the user's own process, since ACLs and mount options make mode bits unreliable."""
    script = 'test -d "$1" && test -x "$1" && test -w "$1"'
    returncode, _ = _run(["sh", "-c", script, "sh", str(path)], cwd=Path("/"), as_user=user)
    return returncode == 0


def _chown_tree(path: Path, user: _ServiceUser) -> None:
    """Hand a state dir to the service user, including files left by an earlier owner."""
    if path.stat().st_uid == user.uid:
        return
    os.chown(path, user.uid, user.gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(Path(root, name), user.uid, user.gid)


def _write_file(path: Path, text: str, user: _ServiceUser | None, mode: int = 0o600) -> None:
    """Write a file the servers read, private by default because several hold secrets."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        # O_CREAT's mode only applies to new files; an existing one keeps its old mode otherwise.
        os.fchmod(file.fileno(), mode)
        if user is not None:
            os.fchown(file.fileno(), user.uid, user.gid)
        file.write(text)


@contextlib.contextmanager
def _locked(state_dir: Path, user: _ServiceUser | None) -> Iterator[None]:
    """Serialise start and stop per state dir, e.g. for pytest-xdist workers starting at once."""
    lock_path = state_dir / ".lock"
    with lock_path.open("a") as lock:
        if user is not None:
            os.fchown(lock.fileno(), user.uid, user.gid)
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


# --- processes and ports --------------------------------------------------------------------


def _process_name(pid: int) -> str | None:
    """The program name of a live process, or None when it is gone or only a zombie."""
    proc = Path("/proc", str(pid))
    if Path("/proc/self").exists():
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            return None
        # The name is in parentheses and may itself contain spaces or parentheses.
        name, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2]
        # A zombie is dead; it lingers when the init process does not reap orphans.
        return None if state == "Z" else name
    returncode, output = _run(["ps", "-o", "stat=,comm=", "-p", str(pid)], cwd=Path("/"))
    fields = output.split(maxsplit=1)
    if returncode != 0 or len(fields) != 2 or fields[0].startswith("Z"):
        return None
    return Path(fields[1].strip()).name


def _wait_for_exit(pid: int, timeout: float) -> bool:
    """Poll until the process is gone, since it is not our child and cannot be waited for."""
    deadline = time.monotonic() + timeout
    while _process_name(pid) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def port_in_use(port: int) -> bool:
    """Tell whether another program holds the port, before our server fails less clearly."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR, as both servers use it, so a closing connection is not mistaken for a
        # listener; on macOS it also lets us bind next to a wildcard listener, hence the connect.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((_HOST, port))
        except OSError:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((_HOST, port)) == 0


def _check_port_free(port: int, env_var: str, option: str) -> None:
    """Fail with the knob to turn, since a busy port otherwise shows up as a vague log line."""
    if port_in_use(port):
        raise StackError(
            f"port {port} on {_HOST} is already in use by another program; "
            f"pick a free one with {env_var}=<port> (or {option} <port>)"
        )


def _last_lines(text: str, count: int = _LOG_TAIL_LINES) -> str:
    """The end of some output, where the reason for a failure usually is."""
    return "\n".join(text.rstrip().splitlines()[-count:])


def _log_tail(path: Path) -> str:
    """The end of a log file, for error messages that explain themselves."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} could not be read)"
    return f"last lines of {path}:\n{_last_lines(text)}"


# --- Postgres -------------------------------------------------------------------------------


def _postgres_pid(data_dir: Path, binaries: Binaries, user: _ServiceUser | None) -> int | None:
    """The postmaster's pid if Postgres runs from this data dir, as pg_ctl sees it."""
    if not (data_dir / "PG_VERSION").is_file():
        return None
    returncode, _ = _run(
        [binaries.pg_ctl, "status", "-D", str(data_dir)], cwd=data_dir.parent, as_user=user
    )
    if returncode != 0:
        return None
    lines = _postmaster_pid_lines(data_dir)
    return int(lines[0]) if lines and lines[0].isdigit() else None


def _postmaster_pid_lines(data_dir: Path) -> list[str]:
    """postmaster.pid: pid, data dir, start time, port, socket dir, address, shm key, status."""
    try:
        return (data_dir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return []


def _check_ports(
    stack: LocalStack, binaries: Binaries, user: _ServiceUser | None
) -> tuple[bool, bool]:
    """Tell which servers already run, failing before anything starts if a port is wrong."""
    config = stack.config
    state_dir = config.state_dir
    postgres_running = _postgres_pid(state_dir / "data", binaries, user) is not None
    pgbouncer_running = _pgbouncer_pid(state_dir) is not None
    if postgres_running:
        lines = _postmaster_pid_lines(state_dir / "data")
        running_port = int(lines[3]) if len(lines) > 3 and lines[3].isdigit() else None
        _check_running_port("Postgres", state_dir, running_port, config.postgres_port)
        logger.info("Postgres already running on %s:%d", _HOST, config.postgres_port)
    else:
        _check_port_free(config.postgres_port, "LOCAL_POSTGRES_PORT", "--postgres-port")
    if pgbouncer_running:
        configured_port = _configured_pooler_port(state_dir)
        _check_running_port("PgBouncer", state_dir, configured_port, config.pooler_port)
        logger.info("PgBouncer already running on %s:%d", _HOST, config.pooler_port)
    else:
        _check_port_free(config.pooler_port, "LOCAL_POOLER_PORT", "--pooler-port")
    return postgres_running, pgbouncer_running


def _check_running_port(server: str, state_dir: Path, running: int | None, wanted: int) -> None:
    """Refuse to hand out URLs for a port that the running server does not listen on."""
    if running != wanted:
        raise StackError(
            f"{server} from {state_dir} already runs on port {running}, not {wanted}; "
            "stop it first (python -m infra.local_stack stop)"
        )


def _start_postgres(stack: LocalStack, binaries: Binaries, user: _ServiceUser | None) -> None:
    """Initialise the data dir on first use, then start Postgres with this start's settings."""
    config = stack.config
    data_dir = config.state_dir / "data"
    if not data_dir.is_dir() or not any(data_dir.iterdir()):
        _initdb(config, binaries, user, data_dir)
    _write_postgres_settings(config, data_dir, user)
    logger.info("starting Postgres on %s:%d", _HOST, config.postgres_port)
    returncode, output = _run(
        [
            binaries.pg_ctl,
            "start",
            "--wait",
            "--timeout=60",
            "-D",
            str(data_dir),
            "-l",
            str(stack.postgres_log),
        ],
        cwd=config.state_dir,
        as_user=user,
        timeout=90,
    )
    if returncode != 0:
        raise StackError(
            f"Postgres did not start:\n{_last_lines(output)}\n{_log_tail(stack.postgres_log)}"
        )


def _initdb(
    config: StackConfig, binaries: Binaries, user: _ServiceUser | None, data_dir: Path
) -> None:
    """Create the cluster with SCRAM for TCP logins and the superuser the URLs name."""
    logger.info("initialising a new Postgres data directory in %s", data_dir)
    password_file = config.state_dir / ".initdb-password"
    _write_file(password_file, config.password + "\n", user)
    try:
        returncode, output = _run(
            [
                binaries.initdb,
                "-D",
                str(data_dir),
                "--auth=scram-sha-256",
                f"--username={config.user}",
                f"--pwfile={password_file}",
                "--encoding=UTF8",
                "--no-locale",
            ],
            cwd=config.state_dir,
            as_user=user,
        )
    finally:
        password_file.unlink(missing_ok=True)
    if returncode != 0:
        raise StackError(f"initdb failed (exit {returncode}):\n{_last_lines(output)}")


def _write_postgres_settings(
    config: StackConfig, data_dir: Path, user: _ServiceUser | None
) -> None:
    """Write this start's settings to a file postgresql.conf includes, rewritten every start."""
    settings: dict[str, str | int | bool] = {
        "listen_addresses": _HOST,
        "port": config.postgres_port,
        # No Unix socket: its default directory (/var/run/postgresql) is often not ours.
        "unix_socket_directories": "",
        "max_connections": config.max_connections,
        "password_encryption": "scram-sha-256",
        "fsync": False,
        "synchronous_commit": False,
        "full_page_writes": False,
        "log_line_prefix": "%m [%p] app=%a ",
        "log_statement": "all" if config.log_statements else "none",
        "log_connections": config.log_statements,
    }
    lines = ["# Written by infra/local_stack.py on every start; edits are overwritten."]
    lines += [f"{name} = {_postgres_conf_value(value)}" for name, value in settings.items()]
    _write_file(data_dir / _PG_CONF_NAME, "\n".join(lines) + "\n", user)
    main_conf = data_dir / "postgresql.conf"
    text = main_conf.read_text()
    if _PG_CONF_INCLUDE not in text.splitlines():
        # Appended last so that these settings win over initdb's defaults above them.
        with main_conf.open("a") as file:
            file.write(f"\n{_PG_CONF_INCLUDE}\n")


def _postgres_conf_value(value: str | int | bool) -> str:
    """Render a postgresql.conf value; strings are quoted so that spaces and `%` survive."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


def _prepare_database(stack: LocalStack) -> str:
    """Create the configured database if needed and return the role's SCRAM secret."""
    config = stack.config
    # The maintenance database always exists, unlike config.database on the first start.
    maintenance_url = LocalStack(dataclasses.replace(config, database="postgres")).direct_url()
    try:
        with _connect(maintenance_url, timeout=5) as connection:
            row = connection.execute(
                "SELECT rolpassword FROM pg_authid WHERE rolname = current_user"
            ).fetchone()
            exists = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [config.database]
            ).fetchone()
            if exists is None:
                logger.info("creating database %s", config.database)
                connection.execute(
                    sql.SQL("CREATE DATABASE {}").format(sql.Identifier(config.database))
                )
    except psycopg.OperationalError as error:
        hint = ""
        if "password authentication failed" in str(error):
            hint = (
                f"; the data in {config.state_dir} was created with another password: use "
                "that one, or stop the stack and delete the state dir to start afresh"
            )
        raise StackError(f"cannot log in to Postgres directly: {error}{hint}") from error
    secret = str(row[0]) if row is not None and row[0] is not None else ""
    if not secret.startswith("SCRAM-SHA-256$"):
        raise StackError(
            f"role {config.user} has no SCRAM password, which PgBouncer needs; "
            f"delete {config.state_dir} to start afresh"
        )
    return secret


# --- PgBouncer ------------------------------------------------------------------------------


def _pgbouncer_pid(state_dir: Path) -> int | None:
    """PgBouncer's pid from its pid file, if that process is alive and really PgBouncer."""
    try:
        pid = int((state_dir / "pgbouncer.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    name = _process_name(pid)
    # A stale pid file may name a pid the system has since given to another program.
    return pid if name is not None and name.startswith("pgbouncer") else None


def _configured_pooler_port(state_dir: Path) -> int | None:
    """The port the running PgBouncer was started with, read back from its config."""
    try:
        text = (state_dir / "pgbouncer.ini").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "listen_port" and value.strip().isdigit():
            return int(value.strip())
    return None


def _start_pgbouncer(
    stack: LocalStack, binaries: Binaries, user: _ServiceUser | None, secret: str
) -> None:
    """Write PgBouncer's config and a userlist holding the SCRAM secret, then start it."""
    config = stack.config
    state_dir = config.state_dir
    # PgBouncer refuses to start while a pid file exists, even a stale one.
    (state_dir / "pgbouncer.pid").unlink(missing_ok=True)
    userlist = state_dir / "userlist.txt"
    _write_file(userlist, f"{_pgbouncer_quote(config.user)} {_pgbouncer_quote(secret)}\n", user)
    ini = state_dir / "pgbouncer.ini"
    version = pgbouncer_version(binaries.pgbouncer)
    _write_file(ini, pgbouncer_ini(config, version, userlist, stack.pgbouncer_log), user)
    logger.info(
        "starting PgBouncer %s (transaction mode) on %s:%d",
        ".".join(map(str, version)),
        _HOST,
        config.pooler_port,
    )
    returncode, output = _run(
        [str(binaries.pgbouncer), "-d", str(ini)], cwd=state_dir, as_user=user
    )
    if returncode != 0:
        raise StackError(
            f"PgBouncer did not start (exit {returncode}):\n{_last_lines(output)}\n"
            f"{_log_tail(stack.pgbouncer_log)}"
        )


def _pgbouncer_quote(value: str) -> str:
    """Quote a userlist field the way PgBouncer parses it: double quotes, doubled inside."""
    return '"' + value.replace('"', '""') + '"'


def pgbouncer_ini(config: StackConfig, version: Version, userlist: Path, logfile: Path) -> str:
    """PgBouncer's config, as strict as Supavisor's transaction pooler in what clients may do."""
    state_dir = config.state_dir
    # Named prepared statements stay off, as on Supavisor; versions before 1.21 never had them.
    prepared = "max_prepared_statements = 0\n" if version >= PREPARED_STATEMENTS_SINCE else ""
    return f"""\
; Written by infra/local_stack.py on every start; edits are overwritten.
[databases]
* = host={_HOST} port={config.postgres_port}

[pgbouncer]
listen_addr = {_HOST}
listen_port = {config.pooler_port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {userlist}
pool_mode = transaction
{prepared}max_client_conn = {config.max_client_conn}
default_pool_size = {config.default_pool_size}
server_login_retry = {config.server_login_retry}
admin_users = {config.user}
stats_users = {config.user}
logfile = {logfile}
pidfile = {state_dir / "pgbouncer.pid"}
log_connections = 1
log_disconnections = 1
ignore_startup_parameters = extra_float_digits
"""


def _connect(url: str, *, timeout: float) -> psycopg.Connection[tuple[object, ...]]:
    """Connect for our own checks: no TLS to negotiate on loopback, nothing left prepared."""
    return psycopg.connect(
        url,
        connect_timeout=max(2, int(timeout)),
        sslmode="disable",
        autocommit=True,
        prepare_threshold=None,
    )


def _wait_for_login(url: str, log: Path, server: str, timeout: float = _LOGIN_TIMEOUT_S) -> None:
    """Poll until a real login succeeds, since a listening socket says nothing about auth."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with _connect(url, timeout=2) as connection:
                connection.execute("SELECT 1")
            return
        except psycopg.OperationalError as error:
            if time.monotonic() > deadline:
                raise StackError(
                    f"no login through {server} within {timeout:.0f} s: {error}\n{_log_tail(log)}"
                ) from error
            time.sleep(0.2)


# --- stopping -------------------------------------------------------------------------------


def _stop_pgbouncer(state_dir: Path) -> None:
    """Shut PgBouncer down safely, and forcibly if clients keep it busy for too long."""
    pid = _pgbouncer_pid(state_dir)
    if pid is not None:
        logger.info("stopping PgBouncer (pid %d)", pid)
        # SIGINT is PgBouncer's safe shutdown: running transactions finish first.
        _signal(pid, signal.SIGINT)
        if not _wait_for_exit(pid, _STOP_TIMEOUT_S):
            logger.warning(
                "PgBouncer still waits for clients after %.0f s; killing it", _STOP_TIMEOUT_S
            )
            _signal(pid, signal.SIGKILL)
            if not _wait_for_exit(pid, 5):
                raise StackError(f"PgBouncer (pid {pid}) is still running after SIGKILL")
    (state_dir / "pgbouncer.pid").unlink(missing_ok=True)


def _signal(pid: int, signum: signal.Signals) -> None:
    """Send a signal to a process that may exit on its own at any moment."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _stop_postgres(state_dir: Path, user: _ServiceUser | None) -> None:
    """Stop Postgres with a fast shutdown, which rolls back open transactions and disconnects."""
    data_dir = state_dir / "data"
    binaries = find_binaries()
    if binaries is None:
        return
    pid = _postgres_pid(data_dir, binaries, user)
    if pid is None:
        return
    logger.info("stopping Postgres (pid %d)", pid)
    returncode, output = _run(
        [binaries.pg_ctl, "stop", "-m", "fast", "--wait", "--timeout=60", "-D", str(data_dir)],
        cwd=state_dir,
        as_user=user,
        timeout=90,
    )
    if returncode != 0:
        raise StackError(f"pg_ctl stop failed (exit {returncode}):\n{_last_lines(output)}")
    if not _wait_for_exit(pid, _STOP_TIMEOUT_S):
        raise StackError(f"Postgres (pid {pid}) is still running after pg_ctl stop")


# --- command line ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    """Options that fall back to environment variables, so the Makefile can pass either."""
    parser = argparse.ArgumentParser(
        prog="python -m infra.local_stack",
        description="Local Postgres behind PgBouncer in transaction mode, like Supabase's pooler.",
    )
    parser.add_argument(
        "command",
        choices=["start", "stop", "status", "url"],
        help="start: print the URLs; url: print one URL; status: exit 0 if both servers are up",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        help=f"data, configs and logs (env LOCAL_STACK_STATE_DIR; default {DEFAULT_STATE_DIR})",
    )
    parser.add_argument(
        "--postgres-port",
        type=int,
        help=f"direct Postgres port (env LOCAL_POSTGRES_PORT; default {DEFAULT_POSTGRES_PORT})",
    )
    parser.add_argument(
        "--pooler-port",
        type=int,
        help=f"transaction pooler port (env LOCAL_POOLER_PORT; default {DEFAULT_POOLER_PORT})",
    )
    parser.add_argument(
        "--password", help="password of the database superuser (env LOCAL_DB_PASSWORD)"
    )
    parser.add_argument(
        "--direct", action="store_true", help="url: print the direct URL, for migrations"
    )
    return parser


def _config_from_args(args: argparse.Namespace) -> StackConfig:
    """The environment's config with whatever the command line sets on top of it."""
    config = config_from_env()
    overrides = {
        "state_dir": args.state_dir,
        "postgres_port": args.postgres_port,
        "pooler_port": args.pooler_port,
        "password": args.password,
    }
    return dataclasses.replace(
        config, **{name: value for name, value in overrides.items() if value is not None}
    )


def main(argv: list[str] | None = None) -> int:
    """Run one command; URLs go to stdout for the Makefile, progress and errors to stderr."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="local_stack: %(message)s", stream=sys.stderr)
    try:
        config = _config_from_args(args)
        if args.command == "start":
            stack = start(config)
            sys.stdout.write(
                f"DATABASE_URL={stack.pooler_url()}\n"
                f"DIRECT_DATABASE_URL={stack.direct_url()}\n"
                f"PGBOUNCER_ADMIN_URL={stack.admin_url()}\n"
            )
        elif args.command == "stop":
            stop(config)
        elif args.command == "status":
            running = is_running(config)
            sys.stdout.write("running\n" if running else "not running\n")
            return 0 if running else 1
        else:
            stack = LocalStack(config)
            sys.stdout.write((stack.direct_url() if args.direct else stack.pooler_url()) + "\n")
    except (StackError, ValueError) as error:
        sys.stderr.write(f"local_stack: {error}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
