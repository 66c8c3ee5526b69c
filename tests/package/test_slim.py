"""The zips carry no debug information, libraries the loader accepts, dependencies as bytecode
alone, and nothing the runtime never imports.

The checkers read each library's ELF headers (pyelftools) straight from the zip. Their
controls: SQLAlchemy's extensions as installed in this virtualenv ship unstripped, and the
debug checker sees it until `slim` ran on a copy; psycopg's bundled libpq, stripped once more
by hand, is refused by this machine's loader, and the load checker sees that too. Whether a
function tries to import something left out is `test_zips.py`'s: it runs them with a trace.
"""

from __future__ import annotations

import importlib.util
import marshal
import platform
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import psycopg_binary
import pytest
import sqlalchemy

from infra import PROJECT_ROOT
from infra.package import TASK_ROOT
from infra.slim import (
    ELF_MAGIC,
    KEEP_SOURCE,
    LEFT_OUT_PATHS,
    LEFT_OUT_SUFFIXES,
    debug_sections,
    find_llvm_strip,
    left_out_imports,
    shared_libraries,
    slim,
    unloadable_segments,
)

PROJECT_PACKAGES = {"shared", "functions"}
UNCHECKED_HASH_FLAGS = 0b01  # PEP 552: hash-based, source not checked


def libraries_in(zip_path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(zip_path) as archive:
        candidates = [name for name in archive.namelist() if ".so" in name.rsplit("/", 1)[-1]]
        contents = {name: archive.read(name) for name in candidates}
    return {name: data for name, data in contents.items() if data[:4] == ELF_MAGIC}


def test_every_shared_library_is_stripped_and_loadable(zip_path: Path) -> None:
    libraries = libraries_in(zip_path)

    unstripped = {name: debug_sections(data) for name, data in libraries.items()}
    unloadable = {name: unloadable_segments(data) for name, data in libraries.items()}

    assert any(name.startswith("sqlalchemy/") for name in libraries)
    assert any(name.startswith("psycopg_binary.libs/libpq") for name in libraries)
    assert {name: found for name, found in unstripped.items() if found} == {}
    assert {name: found for name, found in unloadable.items() if found} == {}


@pytest.mark.skipif(
    (platform.system(), platform.machine()) != ("Linux", "x86_64"),
    reason="loads a Linux x86_64 library with this machine's loader",
)
def test_the_load_check_refuses_what_the_loader_refuses(tmp_path: Path) -> None:
    bundled = Path(psycopg_binary.__file__).parent.with_name("psycopg_binary.libs")
    shutil.copytree(bundled, tmp_path / "libs")
    [libpq] = (tmp_path / "libs").glob("libpq-*")
    as_shipped = libpq.read_bytes()
    load = [sys.executable, "-c", "import ctypes, sys; ctypes.CDLL(sys.argv[1])", str(libpq)]
    subprocess.run([find_llvm_strip(), "--strip-unneeded", str(libpq)], check=True)

    refused = subprocess.run(load, capture_output=True, text=True)
    flagged = unloadable_segments(libpq.read_bytes())
    libpq.write_bytes(as_shipped)
    accepted = subprocess.run(load, capture_output=True, text=True)

    assert "not page-aligned" in refused.stderr
    assert flagged
    assert accepted.returncode == 0, accepted.stderr
    assert unloadable_segments(as_shipped) == []


def test_what_the_runtime_never_imports_is_left_out(zip_path: Path) -> None:
    with zipfile.ZipFile(zip_path) as archive:
        entries = archive.namelist()
    left_out = tuple(path.removesuffix(".py") for path in LEFT_OUT_PATHS)

    assert not [n for n in entries if n.startswith(left_out)]
    assert not [n for n in entries if n.endswith(LEFT_OUT_SUFFIXES)]
    assert "sqlalchemy/dialects/postgresql/psycopg.pyc" in entries
    assert "aws_lambda_powertools/logging/logger.pyc" in entries
    assert "pydantic/main.pyc" in entries
    assert any(n.startswith("sqlalchemy-") and n.endswith(".dist-info/METADATA") for n in entries)


def test_dependencies_ship_bytecode_alone_and_the_project_its_sources(
    zip_path: Path, function: str
) -> None:
    with zipfile.ZipFile(zip_path) as archive:
        entries = archive.namelist()
        legacy = {
            name: archive.read(name)
            for name in entries
            if name.endswith(".pyc") and "__pycache__" not in name
        }
    with_source = {n.split("/", 1)[0] for n in entries if n.endswith(".py")}
    headers = {(data[:4], int.from_bytes(data[4:8], "little")) for data in legacy.values()}
    misnamed = [
        name
        for name, data in legacy.items()
        if marshal.loads(data[16:]).co_filename != f"{TASK_ROOT}/{name.removesuffix('c')}"
    ]

    assert with_source - set(KEEP_SOURCE) == PROJECT_PACKAGES
    assert f"functions/{function}/handler.py" in entries
    assert "sqlalchemy/engine/base.pyc" in legacy
    assert headers == {(importlib.util.MAGIC_NUMBER, UNCHECKED_HASH_FLAGS)}
    assert misnamed == []


def test_slim_strips_what_the_checker_flags_and_keeps_what_runs(tmp_path: Path) -> None:
    installed = Path(sqlalchemy.__file__).parent
    site = tmp_path / "site"
    shutil.copytree(installed / "engine", site / "sqlalchemy" / "engine")
    shutil.copytree(installed / "testing", site / "sqlalchemy" / "testing")
    bundled = Path(psycopg_binary.__file__).parent.with_name("psycopg_binary.libs")
    shutil.copytree(bundled, site / bundled.name)
    (site / "pkg").mkdir()
    for kept in ("__init__.py", "py.typed", "__pycache__/x.cpython-312.pyc"):
        (site / "pkg" / kept).parent.mkdir(exist_ok=True)
        (site / "pkg" / kept).write_text("")
    for dropped in ("stub.pyi", "source.pyx", "header.pxd", "module.c", "switch.h", "x.cpp"):
        (site / "pkg" / dropped).write_text("")
    (site / "pkg-1.0.dist-info").mkdir()
    (site / "pkg-1.0.dist-info" / "METADATA").write_text("Name: pkg\n")
    libraries = list(shared_libraries(site))
    before = {path: path.read_bytes() for path in libraries}

    slim(site)

    after = {path: path.read_bytes() for path in libraries}
    unstripped = [path for path in libraries if debug_sections(before[path])]
    assert unstripped  # the control: SQLAlchemy's installed unstripped, and the checker sees it
    assert not any(debug_sections(data) for data in after.values())
    assert not any(unloadable_segments(data) for data in after.values())
    assert {path for path in libraries if after[path] != before[path]} == set(unstripped)
    assert any(path.parent.name == bundled.name for path in libraries)
    assert not (site / "sqlalchemy" / "testing").exists()
    assert sorted(p.name for p in (site / "pkg").iterdir()) == [
        "__init__.py",
        "__pycache__",
        "py.typed",
    ]
    assert (site / "pkg-1.0.dist-info" / "METADATA").is_file()


def test_the_project_imports_nothing_the_zips_leave_out() -> None:
    sources = [
        path.relative_to(PROJECT_ROOT)
        for package in PROJECT_PACKAGES
        for path in (PROJECT_ROOT / package).rglob("*.py")
    ]

    assert len(sources) > 10
    assert left_out_imports(PROJECT_ROOT, sources) == []


def test_the_build_check_finds_imports_of_what_the_zips_leave_out(tmp_path: Path) -> None:
    (tmp_path / "handler.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from aws_lambda_powertools.utilities import parameters\n"
        "import pydantic.v1.fields\n"
        "from aws_lambda_powertools.logging import Logger\n"
        "if TYPE_CHECKING:\n"
        "    from aws_lambda_powertools.utilities.parser import BaseModel\n"
    )

    found = left_out_imports(tmp_path, [Path("handler.py")])

    assert found == [
        "handler.py:2: aws_lambda_powertools.utilities.parameters",
        "handler.py:3: pydantic.v1.fields",
    ]
