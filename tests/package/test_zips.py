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
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest

from infra import PROJECT_ROOT
from infra.local_stack import LocalStack
from infra.package import read_service
from tests.fixtures import zip_invoker
from tests.fixtures.lambda_events import EVENTS_DIR

ZIP_INVOKER = Path(zip_invoker.__file__)

ROOT = PROJECT_ROOT
SERVICE = read_service()
FUNCTIONS = [function.name for function in SERVICE.functions]
LAMBDA_ZIPPED_LIMIT = 50 * 2**20  # direct upload
LAMBDA_UNZIPPED_LIMIT = 250 * 2**20
ELF_MACHINE = {"x86_64": 62, "arm64": 183}
FASTAPI_FUNCTIONS = {"items"}


def locked_version(package: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    [version] = [p["version"] for p in lock["package"] if p["name"] == package]
    return str(version)


def names(zip_path: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as archive:
        return archive.namelist()


def top_level(zip_path: Path) -> set[str]:
    return {name.split("/", 1)[0] for name in names(zip_path)}


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_zip_holds_only_what_the_function_needs(
    request: pytest.FixtureRequest, arch: str, function: str
) -> None:
    zip_path: Path = request.getfixturevalue(f"zips_{arch}")[function]
    entries = names(zip_path)
    roots = top_level(zip_path)

    assert f"functions/{function}/handler.py" in entries
    assert {n.split("/")[1] for n in entries if n.startswith("functions/")} == {
        "__init__.py",
        "__pycache__",
        function,
    }
    assert roots.isdisjoint({"tests", "infra", "node_modules", ".local", "docs", "dist", "bin"})
    assert roots.isdisjoint({"boto3", "botocore", "s3transfer"})  # the runtime provides them
    assert not any(n.endswith((".md", ".toml", ".lock")) for n in entries if "/" not in n)
    uses_fastapi = function in FASTAPI_FUNCTIONS
    assert ({"fastapi", "mangum", "starlette"} <= roots) == uses_fastapi
    assert ("fastapi" in roots) == uses_fastapi
    assert zip_path.stat().st_size < LAMBDA_ZIPPED_LIMIT
    with zipfile.ZipFile(zip_path) as archive:
        assert sum(i.file_size for i in archive.infolist()) < LAMBDA_UNZIPPED_LIMIT


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_psycopg_is_the_locked_binary_build_for_the_architecture(
    request: pytest.FixtureRequest, arch: str, function: str
) -> None:
    zip_path: Path = request.getfixturevalue(f"zips_{arch}")[function]
    version = locked_version("psycopg-binary")
    machine = "aarch64" if arch == "arm64" else "x86_64"

    with zipfile.ZipFile(zip_path) as archive:
        wheel = archive.read(f"psycopg_binary-{version}.dist-info/WHEEL").decode()
        assert f"psycopg-{locked_version('psycopg')}.dist-info/METADATA" in archive.namelist()
        libraries = [n for n in archive.namelist() if re.match(r"psycopg_binary/.*\.so$", n)]
        headers = [archive.read(name)[:20] for name in libraries]

    assert re.search(rf"^Tag: cp312-cp312-manylinux_\d+_\d+_{machine}$", wheel, re.MULTILINE)
    assert libraries
    for header in headers:
        assert header[:4] == b"\x7fELF"
        assert int.from_bytes(header[18:20], "little") == ELF_MACHINE[arch]


@pytest.mark.parametrize("function", FUNCTIONS)
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
    task_root: Path, events: list[Path], database_url: str, user_id: str = ""
) -> list[dict[str, Any]]:
    """Invoke a function's handler with a Python of the runtime's version that sees only
    its zip (unpacked at `task_root`, named after the function), as `user_id` if given."""
    module = f"functions.{task_root.name}.handler"
    base_python = getattr(sys, "_base_executable", sys.executable)
    done = subprocess.run(
        # -S: no site-packages; -B: write no bytecode, as on Lambda's read-only task root
        # (where root, running these tests, would ignore the folder's permissions).
        [base_python, "-S", "-B", str(ZIP_INVOKER), module, *map(str, events)],
        cwd=task_root,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(task_root),
            "DATABASE_URL": database_url,
            "POWERTOOLS_SERVICE_NAME": "smoke",
            "ZIP_INVOKER_USER_ID": user_id,
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


def test_health_zip_answers_from_the_pooler(unpacked: Path, database: LocalStack) -> None:
    [response] = invoke_from_zip(
        unpacked / "health",
        [EVENTS_DIR / "get_health.json"],
        database.pooler_url(),
    )

    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {"status": "ok", "database": "reachable"}


def test_connections_zip_answers_from_the_pooler(unpacked: Path, database: LocalStack) -> None:
    [response] = invoke_from_zip(
        unpacked / "connections",
        [EVENTS_DIR / "get_connections.json"],
        database.pooler_url(),
    )

    assert response["statusCode"] == 200
    assert json.loads(response["body"])["max_connections"] > 0


def test_items_zip_creates_and_reads_through_the_pooler(
    unpacked: Path, database: LocalStack, tmp_path: Path
) -> None:
    sku = f"ZIP-{os.urandom(4).hex()}"
    create = json.loads((EVENTS_DIR / "post_items.json").read_text())
    create["body"] = json.dumps({"sku": sku, "name": "From the zip"})
    create_file = tmp_path / "create.json"
    create_file.write_text(json.dumps(create))

    created, listed = invoke_from_zip(
        unpacked / "items",
        [create_file, EVENTS_DIR / "get_items.json"],
        database.pooler_url(),
        user_id=str(uuid.uuid4()),  # items are a user's own rows
    )

    assert created["statusCode"] == 201
    assert json.loads(created["body"])["sku"] == sku
    assert listed["statusCode"] == 200
