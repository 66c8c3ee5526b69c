"""The zips carry no debug information and nothing the runtime never imports.

The checker reads each library's ELF section headers (pyelftools) straight from the zip. Its
control: the same checker finds debug sections in SQLAlchemy's extensions as installed in this
virtualenv, which ship unstripped, and no longer finds them after `slim` ran on a copy.
"""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import pytest
import sqlalchemy
from elftools.elf.elffile import ELFFile

from infra.slim import ELF_MAGIC, LEFT_OUT_DIRS, LEFT_OUT_SUFFIXES, shared_libraries, slim
from tests.fixtures.service import FUNCTIONS, uses_fastapi

# The targets, zipped. Missed today: the native libraries alone (psycopg's bundled
# libpq, OpenSSL and Kerberos, pydantic-core) take about 6 MiB compressed; see README, "Zip size".
ZIPPED_TARGET = {"fastapi": 10 * 2**20, "plain": 8 * 2**20}
DEBUG_SECTIONS = (".symtab", ".debug_")


def debug_sections(elf_bytes: bytes) -> list[str]:
    """Names of the sections a stripped library no longer has."""
    elf = ELFFile(io.BytesIO(elf_bytes))
    return [s.name for s in elf.iter_sections() if s.name.startswith(DEBUG_SECTIONS)]


def libraries_in(zip_path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(zip_path) as archive:
        candidates = [name for name in archive.namelist() if ".so" in name.rsplit("/", 1)[-1]]
        contents = {name: archive.read(name) for name in candidates}
    return {name: data for name, data in contents.items() if data[:4] == ELF_MAGIC}


def test_every_shared_library_is_stripped(zip_path: Path) -> None:
    libraries = libraries_in(zip_path)

    unstripped = {name: debug_sections(data) for name, data in libraries.items()}

    assert any(name.startswith("sqlalchemy/") for name in libraries)
    assert any(name.startswith("psycopg_binary") for name in libraries)
    assert {name: found for name, found in unstripped.items() if found} == {}


def test_what_the_runtime_never_imports_is_left_out(zip_path: Path) -> None:
    with zipfile.ZipFile(zip_path) as archive:
        entries = archive.namelist()

    assert not [n for n in entries if n.startswith(tuple(d + "/" for d in LEFT_OUT_DIRS))]
    assert not [n for n in entries if n.endswith(LEFT_OUT_SUFFIXES)]
    assert "sqlalchemy/dialects/postgresql/psycopg.py" in entries
    assert any(n.startswith("sqlalchemy/dialects/postgresql/__pycache__/") for n in entries)
    assert any(n.startswith("sqlalchemy-") and n.endswith(".dist-info/METADATA") for n in entries)


def test_zip_size_meets_the_target(
    request: pytest.FixtureRequest, zip_path: Path, function: str
) -> None:
    request.applymarker(
        pytest.mark.xfail(strict=True, reason="target missed; see README, 'Zip size' for the floor")
    )
    target = ZIPPED_TARGET["fastapi" if uses_fastapi(FUNCTIONS[function]) else "plain"]

    assert zip_path.stat().st_size <= target


def test_slim_strips_what_the_checker_flags_and_keeps_what_runs(tmp_path: Path) -> None:
    installed = Path(sqlalchemy.__file__).parent
    site = tmp_path / "site"
    shutil.copytree(installed / "engine", site / "sqlalchemy" / "engine")
    shutil.copytree(installed / "testing", site / "sqlalchemy" / "testing")
    (site / "pkg").mkdir()
    for kept in ("__init__.py", "py.typed", "__pycache__/x.cpython-312.pyc"):
        (site / "pkg" / kept).parent.mkdir(exist_ok=True)
        (site / "pkg" / kept).write_text("")
    for dropped in ("stub.pyi", "source.pyx", "header.pxd", "module.c"):
        (site / "pkg" / dropped).write_text("")
    (site / "pkg-1.0.dist-info").mkdir()
    (site / "pkg-1.0.dist-info" / "METADATA").write_text("Name: pkg\n")
    libraries = list(shared_libraries(site))
    before = {path.name: debug_sections(path.read_bytes()) for path in libraries}

    slim(site)

    after = {path.name: debug_sections(path.read_bytes()) for path in libraries}
    assert libraries
    assert all(before.values())  # the control: installed unstripped, and the checker sees it
    assert not any(after.values())
    assert not (site / "sqlalchemy" / "testing").exists()
    assert sorted(p.name for p in (site / "pkg").iterdir()) == [
        "__init__.py",
        "__pycache__",
        "py.typed",
    ]
    assert (site / "pkg-1.0.dist-info" / "METADATA").is_file()
