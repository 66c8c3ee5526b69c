"""Make the installed dependencies smaller without changing what the functions run.

Called by `infra.package.build` on each dependency folder, before the bytecode is compiled:

- every shared library (Python extensions and the libraries wheels bundle) loses its debug
  information and the symbols nothing links against (`llvm-strip --strip-unneeded`; the
  dynamic symbol table the loader needs stays). SQLAlchemy's Cython extensions ship unstripped:
  most of their size is DWARF. llvm-strip reads aarch64 and x86_64 alike, so arm64 zips are
  stripped on an x86_64 machine too. Debian/Ubuntu: `apt-get install llvm`; macOS: `brew
  install llvm`, then point `LLVM_STRIP` at its `bin/llvm-strip`.
- packages and files the runtime never imports are left out: SQLAlchemy's test suite and the
  dialects of other databases, type stubs (`*.pyi`) and Cython sources (`*.pyx`, `*.pxd`,
  `*.c`). Bytecode, `.dist-info` (SQLAlchemy reads psycopg's version from it) and `py.typed`
  stay.

`tests/package/test_slim.py` checks every zip for an unstripped library and for what should
have been left out, and the zip smoke test runs every function from its slimmed zip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LEFT_OUT_DIRS", "LEFT_OUT_SUFFIXES", "find_llvm_strip", "shared_libraries", "slim"]

LEFT_OUT_DIRS = (
    "sqlalchemy/testing",
    "sqlalchemy/dialects/mssql",
    "sqlalchemy/dialects/mysql",
    "sqlalchemy/dialects/oracle",
    "sqlalchemy/dialects/sqlite",
)
"""Packages no function imports: the functions talk to PostgreSQL only."""

LEFT_OUT_SUFFIXES = (".pyi", ".pyx", ".pxd", ".c")
"""Type stubs and Cython sources: read by type checkers and compilers, never at runtime."""

ELF_MAGIC = b"\x7fELF"
INSTALL_HINT = (
    "llvm-strip is missing: run 'sudo apt-get install -y llvm' (macOS: 'brew install llvm', "
    "then set LLVM_STRIP=$(brew --prefix llvm)/bin/llvm-strip)"
)


def find_llvm_strip() -> str:
    """`LLVM_STRIP`, else `llvm-strip` on PATH, else the newest versioned `llvm-strip-NN`."""
    configured = os.environ.get("LLVM_STRIP")
    if configured:
        return configured
    unversioned = shutil.which("llvm-strip")
    if unversioned:
        return unversioned
    versioned = [
        Path(directory, name)
        for directory in os.environ.get("PATH", "").split(os.pathsep)
        if Path(directory).is_dir()
        for name in os.listdir(directory)
        if name.removeprefix("llvm-strip-").isdigit()
    ]
    if versioned:
        newest = max(versioned, key=lambda path: int(path.name.removeprefix("llvm-strip-")))
        return str(newest)
    raise SystemExit(INSTALL_HINT)


def shared_libraries(root: Path) -> Iterator[Path]:
    """Every ELF file under `root`, whatever its name (`.so`, `.so.3`, `.so.5.18`)."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and ".so" in path.name:
            with path.open("rb") as file:
                if file.read(4) == ELF_MAGIC:
                    yield path


def _leave_out_unused(site: Path) -> None:
    for relative in LEFT_OUT_DIRS:
        shutil.rmtree(site / relative, ignore_errors=True)
    for path in sorted(site.rglob("*")):
        if path.is_file() and path.suffix in LEFT_OUT_SUFFIXES:
            path.unlink()


def slim(site: Path) -> None:
    """Strip every shared library under `site` and delete what the runtime never imports."""
    _leave_out_unused(site)
    libraries = [str(path) for path in shared_libraries(site)]
    if not libraries:
        return
    done = subprocess.run(
        [find_llvm_strip(), "--strip-unneeded", *libraries],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"llvm-strip failed:\n{done.stderr}")
