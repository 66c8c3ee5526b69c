"""Finding Postgres and PgBouncer on PATH, where Debian or Homebrew put them, or installing them."""

from __future__ import annotations

import logging
import os
import platform
import shutil
from pathlib import Path
from typing import NamedTuple

from infra.local_stack.config import StackError
from infra.local_stack.system import run

logger = logging.getLogger(__name__)

_PG_VERSIONS = range(18, 13, -1)  # newest first; 14 is the oldest still supported upstream
_HOMEBREW = ("opt/homebrew", "usr/local")  # Apple silicon, Intel


class Binaries(NamedTuple):
    """The server programs; initdb and pg_ctl of one installation, so data dirs match."""

    initdb: str
    pg_ctl: str
    pgbouncer: str


def find_binaries(root: Path = Path("/"), search_path: str | None = None) -> Binaries | None:
    """Both programs, or None when either is missing; PATH first, then where packages put them.

    Debian keeps both off a normal user's PATH (/usr/lib/postgresql/N/bin, /usr/sbin), and
    Homebrew's `postgresql@N` is keg-only (`<prefix>/opt/postgresql@N/bin`). `search_path` is
    the PATH to look on (default: the process's); `root` is where the fixed places are looked
    for, so tests can hand in a fake tree.
    """
    initdb = shutil.which("initdb", path=search_path)
    pgbouncer = shutil.which("pgbouncer", path=search_path)
    # Resolved: a symlink on PATH (Homebrew's, or a hand-made one) has no pg_ctl beside it.
    bindirs = [Path(initdb).resolve().parent] if initdb else []
    bindirs += [root / f"usr/lib/postgresql/{v}/bin" for v in _PG_VERSIONS]
    bindirs += [root / f"{brew}/opt/postgresql@{v}/bin" for v in _PG_VERSIONS for brew in _HOMEBREW]
    bouncers = [Path(pgbouncer)] if pgbouncer else []
    bouncers += [root / "usr/sbin/pgbouncer", *(root / f"{b}/bin/pgbouncer" for b in _HOMEBREW)]
    bindir = next((path for path in bindirs if (path / "initdb").is_file()), None)
    found = next((path for path in bouncers if path.is_file()), None)
    if bindir is None or found is None:
        return None
    return Binaries(str(bindir / "initdb"), str(bindir / "pg_ctl"), str(found))


def ensure_binaries() -> Binaries:
    """Find both programs, installing them with apt-get when we are root on Debian, as in CI."""
    binaries = find_binaries()
    apt_get = shutil.which("apt-get")
    if binaries is None and os.geteuid() == 0 and apt_get is not None:
        logger.info("installing postgresql and pgbouncer with apt-get")
        run([apt_get, "update"])
        packages = ["--no-install-recommends", "postgresql", "pgbouncer"]
        run(["env", "DEBIAN_FRONTEND=noninteractive", apt_get, "install", "-y", *packages])
        binaries = find_binaries()
    if binaries is None:
        brew = platform.system() == "Darwin"
        install = "brew install postgresql@16" if brew else "sudo apt-get install -y postgresql"
        raise StackError(f"Postgres or PgBouncer is missing; install them: {install} pgbouncer")
    return binaries
