"""What is inside each Lambda zip, and that it runs as the Lambda runtime would run it.

Each x86_64 zip is unpacked into a read-only folder and its handler invoked by a Python of the
runtime's version that sees only the zip (no virtualenv, no site-packages), with an API
Gateway v2.0 event, against the local pooler. The arm64 zips cannot run here, so their wheel
tags and machine code are checked instead.
"""

from __future__ import annotations

import json
import os
import platform
import re
import stat
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest

from infra import PROJECT_ROOT
from infra.local_stack import LocalStack
from infra.package import PLATFORMS
from tests.fixtures import zip_invoker
from tests.fixtures.lambda_events import LambdaTestContext, http_event
from tests.fixtures.service import (
    FUNCTIONS,
    SERVICE,
    handler_of,
    read_route,
    uses_fastapi,
    verifies_tokens,
)
from tests.fixtures.tokens import Tokens

ZIP_INVOKER = Path(zip_invoker.__file__)

LAMBDA_ZIPPED_LIMIT = 50 * 2**20  # direct upload
LAMBDA_UNZIPPED_LIMIT = 250 * 2**20
ELF_MACHINE = {"x86_64": 62, "aarch64": 183}


def locked_version(package: str) -> str:
    lock = tomllib.loads((PROJECT_ROOT / "uv.lock").read_text())
    [version] = [p["version"] for p in lock["package"] if p["name"] == package]
    return str(version)


def names(zip_path: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as archive:
        return archive.namelist()


def top_level(zip_path: Path) -> set[str]:
    return {name.split("/", 1)[0] for name in names(zip_path)}


def test_zip_holds_only_what_the_function_needs(zip_path: Path, function: str) -> None:
    entries = names(zip_path)
    roots = top_level(zip_path)
    declared = FUNCTIONS[function]

    assert declared.handler_file.as_posix() in entries
    assert {n.split("/")[1] for n in entries if n.startswith("functions/")} == {
        "__init__.py",
        "__pycache__",
        declared.code_dir.name,
    }
    assert roots.isdisjoint({"tests", "infra", "node_modules", ".local", "docs", "dist", "bin"})
    assert roots.isdisjoint({"boto3", "botocore", "s3transfer"})  # the runtime provides them
    assert not any(n.endswith((".md", ".toml", ".lock")) for n in entries if "/" not in n)
    ships_fastapi = uses_fastapi(FUNCTIONS[function])
    assert ({"fastapi", "mangum", "starlette"} <= roots) == ships_fastapi
    assert ("fastapi" in roots) == ships_fastapi
    assert ({"jwt", "cryptography"} <= roots) == verifies_tokens(FUNCTIONS[function])
    assert zip_path.stat().st_size < LAMBDA_ZIPPED_LIMIT
    with zipfile.ZipFile(zip_path) as archive:
        assert sum(i.file_size for i in archive.infolist()) < LAMBDA_UNZIPPED_LIMIT


def test_psycopg_is_the_locked_binary_build_for_the_architecture(zip_path: Path, arch: str) -> None:
    version = locked_version("psycopg-binary")
    machine = PLATFORMS[arch].split("-")[0]  # the wheel tag's machine: aarch64, x86_64

    with zipfile.ZipFile(zip_path) as archive:
        wheel = archive.read(f"psycopg_binary-{version}.dist-info/WHEEL").decode()
        assert f"psycopg-{locked_version('psycopg')}.dist-info/METADATA" in archive.namelist()
        libraries = [n for n in archive.namelist() if re.match(r"psycopg_binary/.*\.so$", n)]
        headers = [archive.read(name)[:20] for name in libraries]

    assert re.search(rf"^Tag: cp312-cp312-manylinux_\d+_\d+_{machine}$", wheel, re.MULTILINE)
    assert libraries
    for header in headers:
        assert header[:4] == b"\x7fELF"
        assert int.from_bytes(header[18:20], "little") == ELF_MACHINE[machine]


def test_every_module_ships_bytecode_for_the_runtime(
    zips_x86_64: dict[str, Path], function: str
) -> None:
    entries = set(names(zips_x86_64[function]))
    tag = f"cpython-{SERVICE.python_version.replace('.', '')}"
    sources = [n for n in entries if n.endswith(".py")]

    missing = [
        source
        for source in sources
        if f"{os.path.dirname(source)}/__pycache__/{Path(source).stem}.{tag}.pyc".lstrip("/")
        not in entries
    ]

    assert sources
    assert missing == []


@pytest.fixture(scope="module")
def unpacked(zips_x86_64: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each zip unpacked into its own folder, then made read-only as Lambda's task root is."""
    if (platform.system(), platform.machine()) != ("Linux", "x86_64"):
        # CI runs on Linux x86_64; a Mac can build the zips but not run their Linux binaries.
        pytest.skip("the x86_64 zips hold Linux binaries: run them on Linux x86_64")
    root = tmp_path_factory.mktemp("task-roots")
    for function, zip_path in zips_x86_64.items():
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(root / function)
    for path in sorted(root.rglob("*"), reverse=True):
        mode = stat.S_IREAD | (stat.S_IEXEC if path.is_dir() else 0)
        path.chmod(mode | stat.S_IRGRP | stat.S_IROTH)
    return root


def invoke_from_zip(
    task_root: Path,
    events: list[dict[str, Any]],
    database_url: str,
    work: Path,
    supabase_url: str = "",
) -> list[dict[str, Any]]:
    """Invoke a function's handler with a Python of the runtime's version that sees only
    its zip (unpacked at `task_root`, named after the function)."""
    declared = FUNCTIONS[task_root.name]
    event_files = []
    for number, event in enumerate(events):
        event_files.append(work / f"{task_root.name}-event-{number}.json")
        event_files[-1].write_text(json.dumps(event))
    base_python = getattr(sys, "_base_executable", sys.executable)
    done = subprocess.run(
        # -S: no site-packages; -B: write no bytecode, as on Lambda's read-only task root
        # (where root, running these tests, would ignore the folder's permissions).
        [
            base_python,
            "-S",
            "-B",
            str(ZIP_INVOKER),
            f"{declared.handler_module}:{declared.handler_name}",
            *map(str, event_files),
        ],
        cwd=task_root,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(task_root),
            "DATABASE_URL": database_url,
            "SUPABASE_URL": supabase_url,
            "POWERTOOLS_SERVICE_NAME": "smoke",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [
        json.loads(line.removeprefix("RESPONSE "))
        for line in done.stderr.splitlines()
        if line.startswith("RESPONSE ")
    ]


def test_smoke_python_is_the_runtime_version() -> None:
    base_python = getattr(sys, "_base_executable", sys.executable)
    version = subprocess.run(
        [
            base_python,
            "-S",
            "-c",
            "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

    assert version == SERVICE.python_version


@pytest.mark.parametrize("function", FUNCTIONS)
def test_zip_answers_through_the_pooler_as_the_source_does(
    unpacked: Path, database: LocalStack, tokens: Tokens, tmp_path: Path, function: str
) -> None:
    route = read_route(FUNCTIONS[function])
    # A service_role token reads every function; a forged one and none show the zip verifies.
    events = [
        http_event(route, token=tokens.service_role()),
        http_event(route, token=tokens.forged("alg none", role="service_role")),
        http_event(route),
    ]
    from_source = [handler_of(FUNCTIONS[function])(e, LambdaTestContext()) for e in events]

    from_zip = invoke_from_zip(
        unpacked / function, events, database.pooler_url(), tmp_path, tokens.supabase_url
    )

    assert [r["statusCode"] for r in from_zip] == [r["statusCode"] for r in from_source]
    assert from_zip[0]["statusCode"] < 500
    assert json.loads(from_zip[0]["body"]).keys() == json.loads(from_source[0]["body"]).keys()
    if verifies_tokens(FUNCTIONS[function]):
        assert from_zip[1]["statusCode"] == 401
