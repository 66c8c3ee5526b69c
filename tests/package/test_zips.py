"""What is inside each Lambda zip, and that it runs as the Lambda runtime would run it.

Each x86_64 zip is unpacked into a read-only folder and its handler invoked by a Python of the
runtime's version that sees only the zip (no virtualenv, no site-packages), with an API
Gateway v2.0 event, against the local pooler, with psycopg held to its binary build (Lambda
has no other libpq). The arm64 zips cannot run here, so their wheel tags and machine code are
checked instead. Each function also runs every kind of request with an import trace, which
fails the suite if it tried to import a module `infra/slim.py` left out of its zip.
"""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import stat
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import psycopg
import pytest

from infra import PROJECT_ROOT
from infra.local_stack import LocalStack
from infra.package import read_service
from infra.slim import left_out_modules
from tests.fixtures import zip_invoker
from tests.fixtures.lambda_events import (
    EVENTS_DIR,
    function_url_event,
    http_event,
    rest_event,
    stored_event,
)

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
    task_root: Path,
    events: list[Path],
    database_url: str,
    *,
    module: str | None = None,
    trace: Path | None = None,
) -> list[dict[str, Any]]:
    """Invoke a function's handler with a Python of the runtime's version that sees only
    its zip (unpacked at `task_root`, named after the function); `trace`: where the invoker
    writes the modules imported and the imports nothing satisfied."""
    module = module or f"functions.{task_root.name}.handler"
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
            # No falling back to a libpq this machine happens to have: Lambda has none.
            "PSYCOPG_IMPL": "binary",
        }
        | ({"ZIP_INVOKER_TRACE": str(trace)} if trace else {}),
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
    )

    assert created["statusCode"] == 201
    assert json.loads(created["body"])["sku"] == sku
    assert listed["statusCode"] == 200


TRIED_AND_HANDLED = {"pydantic.v1"}
"""Left-out modules a function tries to import, each with why a failed import changes nothing:
FastAPI imports pydantic.v1 only to reject v1 models, and reads ImportError as "not one"."""


def left_out_tried(trace: Path) -> set[str]:
    """The modules left out of the zips that the traced run tried to import."""
    left_out = left_out_modules()
    unfound: list[str] = json.loads(trace.read_text())["unfound"]
    return {
        name
        for name in unfound
        if name in left_out or name.startswith(tuple(f"{module}." for module in left_out))
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def write_events(folder: Path, events: dict[str, dict[str, Any]]) -> list[Path]:
    folder.mkdir()
    for name, event in events.items():
        (folder / f"{name}.json").write_text(json.dumps(event))
    return [folder / f"{name}.json" for name in events]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_no_function_imports_what_its_zip_leaves_out(
    unpacked: Path, database: LocalStack, tmp_path: Path, function: str
) -> None:
    """Every kind of request, bad input, and a database that is down: the code paths a
    function can take, in one traced process each, every function handed every event."""
    with psycopg.connect(database.pooler_url(), autocommit=True) as conn:
        [(item_id,)] = conn.execute(
            "INSERT INTO items (sku, name) VALUES (%s, 'traced') RETURNING id",
            [f"TRACE-{os.urandom(4).hex()}"],
        ).fetchall()
    item = f"/items/{item_id}"
    served = write_events(
        tmp_path / "served",
        {
            "create": http_event(
                "post_items", body={"sku": f"TRACE-{os.urandom(4).hex()}", "name": "Traced"}
            ),
            "invalid": http_event("post_items", body={"sku": ""}),
            "list": http_event("get_items", query="limit=2"),
            "read": http_event("get_item", path=item),
            "read_rest": rest_event("GET", item),
            "read_url": function_url_event("GET", item),
            "update": http_event("patch_item", path=item, body={"quantity": 2}),
            "delete": http_event("delete_item", path=item),
            "missing": http_event("get_item", path=item),
            **{name: stored_event(name) for name in ("get_health", "get_connections", "sqs")},
        },
    )
    down = write_events(
        tmp_path / "down",
        {name: stored_event(name) for name in ("get_health", "get_connections", "get_item")},
    )
    closed = database.pooler_url().replace(f":{database.config.pooler_port}/", f":{free_port()}/")

    answered = invoke_from_zip(
        unpacked / function, served, database.pooler_url(), trace=tmp_path / "served.json"
    )
    unavailable = invoke_from_zip(unpacked / function, down, closed, trace=tmp_path / "down.json")

    assert all(response["statusCode"] < 500 for response in answered)
    assert 503 in [response["statusCode"] for response in unavailable]
    modules = json.loads((tmp_path / "served.json").read_text())["modules"]
    assert modules[f"functions.{function}.handler"].startswith(str(unpacked / function))
    assert modules["psycopg_binary.pq"].startswith(str(unpacked / function))
    tried = left_out_tried(tmp_path / "served.json") | left_out_tried(tmp_path / "down.json")
    assert tried <= TRIED_AND_HANDLED


def test_the_import_trace_sees_a_caught_import_of_a_left_out_module(tmp_path: Path) -> None:
    """The control: code that catches the ImportError of a left-out module is still caught."""
    utilities = tmp_path / "aws_lambda_powertools" / "utilities"
    utilities.mkdir(parents=True)
    (utilities.parent / "__init__.py").write_text("")
    (utilities / "__init__.py").write_text("")
    (tmp_path / "probe.py").write_text(
        "try:\n"
        "    import aws_lambda_powertools.utilities.parameters\n"
        "except ImportError:\n"
        "    pass\n"
        "handler = None\n"
    )

    invoke_from_zip(tmp_path, [], "", module="probe", trace=tmp_path / "trace.json")

    assert left_out_tried(tmp_path / "trace.json") == {"aws_lambda_powertools.utilities.parameters"}
