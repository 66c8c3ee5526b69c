"""Make the installed dependencies smaller without changing what the functions run.

Called by `infra.package.build` on each dependency folder, before the bytecode is compiled:

- every shared library that carries debug information or a full symbol table loses them
  (`llvm-strip --strip-unneeded`; the dynamic symbol table the loader needs stays).
  SQLAlchemy's Cython extensions and greenlet ship unstripped: most of their size is DWARF.
  The libraries auditwheel bundled and rewrote with patchelf (psycopg's libpq, OpenSSL,
  Kerberos and its own extensions) come stripped already, and stripping them again moves
  their load segments off the page alignment the loader requires ("ELF load command
  address/offset not page-aligned"): they are left as they are, and `slim` refuses to finish
  if a library it stripped would no longer load. llvm-strip reads aarch64 and x86_64 alike,
  so arm64 zips are stripped on an x86_64 machine too. Debian/Ubuntu: `apt-get install
  llvm`; macOS: `brew install llvm`, then point `LLVM_STRIP` at its `bin/llvm-strip`.
- the packages and files in `LEFT_OUT_PATHS` are left out: each group below says why no
  function imports them, and `tests/package/test_slim.py` runs every function from its zip
  with a finder that records each import nothing could satisfy, and fails on a left-out one.
  Type stubs, C and Cython sources are left out by suffix. Bytecode, `.dist-info`
  (SQLAlchemy reads psycopg's version from it) and `py.typed` stay.

Leaving out only pays if no function needs what is gone, so the build refuses project code
(`shared/`, `functions/`) that imports a left-out module: to use one, delete its line here.
"""

from __future__ import annotations

import ast
import io
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

from elftools.elf.elffile import ELFFile

__all__ = [
    "DEBUG_SECTIONS",
    "KEEP_SOURCE",
    "LEFT_OUT_PATHS",
    "LEFT_OUT_SUFFIXES",
    "debug_sections",
    "find_llvm_strip",
    "left_out_imports",
    "left_out_modules",
    "shared_libraries",
    "slim",
    "unloadable_segments",
]

OTHER_DATABASES = (
    "sqlalchemy/dialects/mssql",
    "sqlalchemy/dialects/mysql",
    "sqlalchemy/dialects/oracle",
    "sqlalchemy/dialects/sqlite",
    "sqlalchemy/connectors/aioodbc.py",
    "sqlalchemy/connectors/pyodbc.py",
)
"""The functions talk to PostgreSQL only; the ODBC connectors serve only SQL Server."""

TEST_AND_TYPING_TOOLS = (
    "sqlalchemy/testing",
    "greenlet/tests",
    "anyio/pytest_plugin.py",
    "pydantic/mypy.py",
    "fastapi/testclient.py",
    "starlette/testclient.py",
)
"""Test suites and plugins that pytest or mypy load; the test clients also need httpx, which
no zip holds."""

PYDANTIC_V1 = ("pydantic/v1",)
"""Pydantic's copy of its 1.x API. The project's models are v2; FastAPI imports it only to
reject v1 models and takes a failed import for "not a v1 model" (`fastapi/_compat/shared.py`),
which also spares the items function importing it at every cold start."""

UNUSED_POWERTOOLS = (
    "aws_lambda_powertools/event_handler",
    "aws_lambda_powertools/utilities/auth_alpha",
    "aws_lambda_powertools/utilities/batch",
    "aws_lambda_powertools/utilities/circuit_breaker",
    "aws_lambda_powertools/utilities/data_classes",
    "aws_lambda_powertools/utilities/data_masking",
    "aws_lambda_powertools/utilities/feature_flags",
    "aws_lambda_powertools/utilities/idempotency",
    "aws_lambda_powertools/utilities/kafka",
    "aws_lambda_powertools/utilities/parameters",
    "aws_lambda_powertools/utilities/parser",
    "aws_lambda_powertools/utilities/streaming",
    "aws_lambda_powertools/utilities/validation",
)
"""Powertools utilities the project does not use: it imports the Logger and
`utilities.typing`, which import `logging`, `metrics`, `tracing`, `shared` and
`utilities.jmespath_utils` (all kept). `event_handler` is Powertools' own HTTP router (the
functions route with FastAPI or plain handlers) and carries the Swagger UI's JavaScript; the
Logger reaches into it only to log a pydantic model passed as the event, and Lambda passes
events as dicts."""

LEFT_OUT_PATHS = OTHER_DATABASES + TEST_AND_TYPING_TOOLS + PYDANTIC_V1 + UNUSED_POWERTOOLS
"""Folders and modules, relative to the dependency folder (the root of the zip)."""

LEFT_OUT_SUFFIXES = (".pyi", ".pyx", ".pxd", ".c", ".h", ".cpp", ".hpp", ".asm", ".obj", ".cmd")
"""Type stubs, and Cython, C, C++ and assembly sources, headers and build scripts (greenlet
ships its own): read by type checkers and compilers, never at runtime."""

KEEP_SOURCE = ("anyio",)
"""Packages that keep their `.py` beside the bytecode, because they read it at runtime:
anyio's `__init__` parses its own source to import its members lazily, and without it imports
them all at once. Every other dependency ships bytecode alone (`infra.package`)."""

ELF_MAGIC = b"\x7fELF"
DEBUG_SECTIONS = (".symtab", ".debug_")
PAGE_SIZE = 4096
"""Lambda's memory page, on x86_64 and arm64 alike: what the loader aligns segments to."""
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


def debug_sections(elf_bytes: bytes) -> list[str]:
    """Names of the sections `llvm-strip --strip-unneeded` removes."""
    elf = ELFFile(io.BytesIO(elf_bytes))
    return [s.name for s in elf.iter_sections() if s.name.startswith(DEBUG_SECTIONS)]


def unloadable_segments(elf_bytes: bytes) -> list[str]:
    """Load segments the dynamic loader refuses: file offset and address not congruent
    modulo the page size (glibc's "ELF load command address/offset not page-aligned")."""
    elf = ELFFile(io.BytesIO(elf_bytes))
    return [
        f"offset {segment['p_offset']:#x}, address {segment['p_vaddr']:#x}"
        for segment in elf.iter_segments("PT_LOAD")
        if (segment["p_vaddr"] - segment["p_offset"]) % PAGE_SIZE
    ]


def left_out_modules() -> tuple[str, ...]:
    """The dotted names of the left-out packages and modules."""
    return tuple(path.removesuffix(".py").replace("/", ".") for path in LEFT_OUT_PATHS)


def _is_type_checking(test: ast.expr) -> bool:
    """`TYPE_CHECKING` or `typing.TYPE_CHECKING`: the block runs under type checkers only."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, module) for each absolute import outside `if TYPE_CHECKING:`; for `from a import
    b`, both `a` and `a.b`, since `b` may be a submodule."""
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            pending += node.orelse
            continue
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module
            yield from ((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
        pending += ast.iter_child_nodes(node)


def left_out_imports(root: Path, sources: Iterable[Path]) -> list[str]:
    """`file:line: module` for each import in these sources of a module left out of the zips."""
    left_out = left_out_modules()
    found = []
    for relative in sorted(sources):
        if relative.suffix != ".py":
            continue
        tree = ast.parse((root / relative).read_bytes(), filename=str(relative))
        found += [
            f"{relative}:{line}: {name}"
            for line, name in sorted(set(_imported_names(tree)))
            if name.startswith(tuple(f"{module}." for module in left_out)) or name in left_out
        ]
    return found


def _leave_out_unused(site: Path) -> None:
    for relative in LEFT_OUT_PATHS:
        path = site / relative
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    for path in sorted(site.rglob("*")):
        if path.is_file() and path.suffix in LEFT_OUT_SUFFIXES:
            path.unlink()


def slim(site: Path) -> None:
    """Strip the shared libraries under `site` that carry debug information and delete what
    the runtime never imports."""
    _leave_out_unused(site)
    unstripped = [path for path in shared_libraries(site) if debug_sections(path.read_bytes())]
    if not unstripped:
        return
    done = subprocess.run(
        [find_llvm_strip(), "--strip-unneeded", *map(str, unstripped)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"llvm-strip failed:\n{done.stderr}")
    broken = [
        f"{path.relative_to(site)} ({'; '.join(segments)})"
        for path in unstripped
        if (segments := unloadable_segments(path.read_bytes()))
    ]
    if broken:
        raise SystemExit(f"llvm-strip left libraries the loader refuses: {', '.join(broken)}")
