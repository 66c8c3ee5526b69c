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
import stat
import subprocess
import sys
import tomllib
import uuid
import zipfile
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest

from infra import PROJECT_ROOT
from infra.local_stack import LocalStack
from infra.package import PLATFORMS
from infra.slim import left_out_modules
from tests.fixtures import zip_invoker
from tests.fixtures.lambda_events import (
    LambdaTestContext,
    authorized,
    function_url_event,
    http_event,
    path_parameter_names,
    rest_event,
    stored_event,
)
from tests.fixtures.secrets_extension import serve_secrets_extension
from tests.fixtures.service import (
    BODY_METHODS,
    FUNCTIONS,
    HTTP_FUNCTIONS,
    SERVICE,
    handler_module,
    handler_of,
    read_route,
    uses_fastapi,
    verifies_tokens,
)
from tests.fixtures.stack import free_port
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
    assert "shared/certs/supabase-root-2021-ca.pem" in entries  # verify-full against Supabase
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
    *,
    handler: str | None = None,
    trace: Path | None = None,
    environment: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Invoke a function's handler (`handler`, "module:attribute", else serverless.yml's) with
    a Python of the runtime's version that sees only its zip (unpacked at `task_root`, named
    after the function); `trace`: where the invoker writes the modules imported and the
    imports nothing satisfied; `environment`: more variables (an empty `database_url` sets
    no DATABASE_URL)."""
    if handler is None:
        declared = FUNCTIONS[task_root.name]
        handler = f"{handler_module(declared)}:{declared.handler_name}"
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
            handler,
            *map(str, event_files),
        ],
        cwd=task_root,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(task_root),
            "SUPABASE_URL": supabase_url,
            "POWERTOOLS_SERVICE_NAME": "smoke",
            # No falling back to a libpq this machine happens to have: Lambda has none.
            "PSYCOPG_IMPL": "binary",
        }
        | ({"DATABASE_URL": database_url} if database_url else {})
        | ({"ZIP_INVOKER_TRACE": str(trace)} if trace else {})
        | (environment or {}),
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


@pytest.mark.parametrize("function", HTTP_FUNCTIONS)
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


def test_the_monitor_publishes_from_its_zip_on_its_schedule(
    unpacked: Path, database: LocalStack, tmp_path: Path
) -> None:
    """The scheduled function, which no HTTP test reaches: its zip runs EventBridge's event
    through the pooler and writes its metrics, importing nothing its zip leaves out."""
    [result] = invoke_from_zip(
        unpacked / "monitor",
        [stored_event("scheduled")],
        database.pooler_url(),
        tmp_path,
        trace=tmp_path / "monitor.json",
    )

    assert result == {"ran": True}
    modules = json.loads((tmp_path / "monitor.json").read_text())["modules"]
    assert modules["functions.monitor.handler"].startswith(str(unpacked / "monitor"))
    assert left_out_tried(tmp_path / "monitor.json") <= TRIED_AND_HANDLED


# Example bodies for the sample's writes, so the trace covers a create and an update that
# succeed; any other write route gets an empty body (a 422, the validation path).
EXAMPLE_BODIES: dict[str, dict[str, Any]] = {
    "POST /items": {"sku": "TRACE-1", "name": "Traced"},
    "PATCH /items/{item_id}": {"quantity": 2},
}


def served_events(row_id: int, token: str) -> list[dict[str, Any]]:
    """Every declared route (reads before writes, the delete last), bad input, the read route
    as a REST and a function URL event, and an SQS message: the paths a function can take."""
    routes = sorted(SERVICE.routes, key=lambda route: (route.method == "DELETE", route.method))
    events = [
        http_event(
            route,
            params=dict.fromkeys(path_parameter_names(route), row_id),
            body=EXAMPLE_BODIES.get(route.key, {}) if route.method in BODY_METHODS else None,
            token=token,
        )
        for route in routes
    ]
    read = next(r for r in routes if r.method == "GET" and path_parameter_names(r))
    path = http_event(read, params=dict.fromkeys(path_parameter_names(read), row_id))["rawPath"]
    return [
        *events,
        http_event(routes[0], raw_body="{not json", token=token),
        authorized(rest_event("GET", path), token),
        authorized(function_url_event("GET", path), token),
        stored_event("sqs"),
    ]


@pytest.mark.parametrize("function", HTTP_FUNCTIONS)
def test_no_function_imports_what_its_zip_leaves_out(
    unpacked: Path, database: LocalStack, tokens: Tokens, tmp_path: Path, function: str
) -> None:
    """Every kind of request, bad input, and a database that is down, in one traced process
    each, every function handed every event."""
    owner = str(uuid.uuid4())  # the user the events act as, who owns the row they read
    with psycopg.connect(database.pooler_url(), autocommit=True) as conn:
        [(row_id,)] = conn.execute(
            "INSERT INTO items (owner_id, sku, name) VALUES (%s, %s, 'traced') RETURNING id",
            [owner, f"TRACE-{os.urandom(4).hex()}"],
        ).fetchall()
    served = served_events(row_id, tokens.token(user_id=owner))
    down = [http_event(read_route(f), token=tokens.service_role()) for f in HTTP_FUNCTIONS.values()]
    closed = database.pooler_url().replace(f":{database.config.pooler_port}/", f":{free_port()}/")

    answered = invoke_from_zip(
        unpacked / function,
        served,
        database.pooler_url(),
        tmp_path,
        tokens.supabase_url,
        trace=tmp_path / "served.json",
    )
    unavailable = invoke_from_zip(
        unpacked / function,
        down,
        closed,
        tmp_path,
        tokens.supabase_url,
        trace=tmp_path / "down.json",
    )

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

    invoke_from_zip(
        tmp_path, [], "", tmp_path, handler="probe:handler", trace=tmp_path / "trace.json"
    )

    assert left_out_tried(tmp_path / "trace.json") == {"aws_lambda_powertools.utilities.parameters"}


def test_zip_reads_the_secret_through_the_extension_with_no_aws_sdk(
    unpacked: Path, database: LocalStack, aws: None, tmp_path: Path
) -> None:
    """The deployed default: the zip holds no boto3 (the runtime's would be on the path), so
    here an attempt to use it fails the request or shows in the trace. Powertools probes for
    the bare `botocore` package, caught, in every run: only that is allowed."""
    client = boto3.client("secretsmanager")
    arn = client.create_secret(Name="zip/database-url", SecretString=database.pooler_url())["ARN"]
    with serve_secrets_extension(client) as extension:
        [response] = invoke_from_zip(
            unpacked / "health",
            [http_event(read_route(FUNCTIONS["health"]))],
            "",
            tmp_path,
            trace=tmp_path / "trace.json",
            environment={"DATABASE_SECRET_ARN": arn} | extension.environment(),
        )

    trace = json.loads((tmp_path / "trace.json").read_text())
    aws_sdk = {name for name in [*trace["modules"], *trace["unfound"]] if name.startswith("bo")}
    assert response["statusCode"] == 200
    assert extension.reads == 1
    assert aws_sdk <= {"botocore"}
