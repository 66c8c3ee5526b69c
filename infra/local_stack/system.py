"""Running the servers: as whom and where (both refuse root), and whether they and ports live."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pwd
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from infra.local_stack.config import HOST, StackError

logger = logging.getLogger(__name__)

User = pwd.struct_passwd
"""The unprivileged account the servers run as when we are root; None means ourselves."""


def service_user() -> User | None:
    """Ourselves, unless we are root (CI and dev containers): then `postgres`, or `nobody`."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise StackError("running as root, but neither a `postgres` nor a `nobody` user exists")


def run(args: list[str], user: User | None = None, log: Path | None = None) -> str:
    """Run a command to its end, as `user` when given; its output, or an error showing it and
    the end of the `log` it wrote to."""
    # A file, not a pipe: a daemon it starts (postgres, `pgbouncer -d`) inherits the output,
    # and reading a pipe would wait for the daemon to exit.
    with tempfile.TemporaryFile() as file:
        try:
            done = subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                stdout=file,
                stderr=subprocess.STDOUT,
                cwd="/",
                user=user.pw_uid if user else None,
                group=user.pw_gid if user else None,
                extra_groups=[] if user else None,
                check=False,
            )
        except OSError as error:
            raise StackError(f"`{' '.join(args)}` could not run: {error}") from error
        file.seek(0)
        output = file.read().decode(errors="replace")
    if done.returncode != 0:
        details = f"{tail(output)}\n{log_tail(log) if log else ''}".rstrip()
        raise StackError(f"`{' '.join(args)}` failed (exit {done.returncode}):\n{details}")
    return output


def state_dir(requested: Path, user: User | None, *, create: bool) -> Path:
    """The requested state dir, or a private one in /tmp when the service user cannot reach it
    (a checkout under /root, say)."""
    requested = requested.expanduser().resolve()
    if create:
        requested.mkdir(mode=0o700, parents=True, exist_ok=True)
    if user is None or (requested.is_dir() and _reachable(requested, user, create)):
        return requested
    digest = hashlib.sha1(str(requested).encode(), usedforsecurity=False).hexdigest()[:12]
    fallback = Path("/tmp") / f"local-stack-{digest}"
    if create:
        fallback.mkdir(mode=0o700, exist_ok=True)
        # /tmp is shared: refuse a directory someone else planted there for us to use.
        if fallback.is_symlink() or fallback.lstat().st_uid not in (0, user.pw_uid):
            raise StackError(f"{fallback} exists and is not ours; remove it and retry")
        if not _reachable(fallback, user, create):
            raise StackError(f"user {user.pw_name} cannot write to {fallback}")
    return fallback if fallback.is_dir() else requested


def _reachable(path: Path, user: User, hand_over: bool) -> bool:
    """Whether `user` can work in `path` (handed to it first), asked of its own shell since ACLs
    and mount options make mode bits unreliable."""
    if hand_over:
        os.chown(path, user.pw_uid, user.pw_gid)
    try:
        run(["sh", "-c", 'test -d "$1" && test -x "$1" && test -w "$1"', "sh", str(path)], user)
    except StackError:
        return False
    return True


def write_file(path: Path, text: str, user: User | None) -> None:
    """Write a file for the servers, readable by them alone, since several hold secrets."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        os.fchmod(file.fileno(), 0o600)  # O_CREAT's mode is not applied to an existing file
        if user is not None:
            os.fchown(file.fileno(), user.pw_uid, user.pw_gid)
        file.write(text)


def running_pid(pid_file: Path, name: str) -> int | None:
    """The pid a server wrote to its pid file, if that process lives and is the server."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _alive(pid, name) else None


def stop_process(pid_file: Path, name: str, gentle: signal.Signals, hard: signal.Signals) -> None:
    """Stop a server with its gentle signal, or with the hard one if it still runs after 10 s."""
    pid = running_pid(pid_file, name)
    if pid is None:
        return
    for signum, timeout in ((gentle, 10), (hard, 5)):
        logger.info("stopping %s (pid %d) with %s", name, pid, signum.name)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        deadline = time.monotonic() + timeout
        while _alive(pid, name) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _alive(pid, name):
            return
    raise StackError(f"{name} (pid {pid}) is still running after {hard.name}")


def _alive(pid: int, name: str) -> bool:
    """Whether `pid` is a live process called `name`: a stale pid file may name a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return False
        try:  # macOS, which has no /proc
            return Path(run(["ps", "-o", "comm=", "-p", str(pid)]).strip()).name.startswith(name)
        except StackError:
            return False
    # "pid (name) state ...": a zombie is dead, but lingers where init does not reap orphans.
    return stat[stat.index("(") + 1 :].startswith(name) and stat[stat.rindex(")") + 2] != "Z"


def port_in_use(port: int) -> bool:
    """Whether another program holds the port, so that we fail before our server does, vaguely."""
    with socket.socket() as probe:
        # SO_REUSEADDR, as both servers use it, so a closing connection is not mistaken for a
        # listener; on macOS it also lets us bind next to a wildcard listener, hence the connect.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return True
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((HOST, port)) == 0


def tail(text: str, lines: int = 20) -> str:
    """The end of some output, where the reason for a failure usually is."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def log_tail(log: Path) -> str:
    """The end of a server's log, for error messages that explain themselves."""
    text = log.read_text(errors="replace") if log.is_file() else "(none)"
    return f"last lines of {log}:\n{tail(text)}"
