"""Cold start from the real zips, as Lambda starts them, against references measured alongside.

Each zip is unpacked into a read-only folder and run by the runtime's Python with `-S -B` (no
site-packages, no bytecode writes), a new process per sample. A folder with boto3 and its
dependencies stands in for the runtime's own `/var/runtime`, on the path in every scenario:

- bare interpreter: `python -S -B -c pass`, the floor;
- import: the handler module, with the zip's `.pyc`, and the same zip without them (built with
  the dependencies' sources, which the shipped zip leaves out);
- import + first request with `DATABASE_URL`;
- import + first request with `DATABASE_SECRET_ARN`, the deployed path: through the Parameters
  and Secrets Lambda Extension (the default), the extension being the tests' stand-in on
  loopback, which reads from moto's server; and through boto3 (the extension switched off),
  reading from moto's server itself (`AWS_ENDPOINT_URL`).

Samples are whole-process wall times (start to exit), interleaved across scenarios. Beside
them, each round imports each handler once more under `-X importtime` (with bytecode, as the
"import" scenario), and the import's own time is summed by module group: where it goes.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer

from bench.contenders import BenchError
from bench.stack import BENCH_USER
from infra.package import copy_code, install_dependencies, write_zip
from infra.serverless_config import read_service
from infra.slim import slim
from tests.fixtures import zip_invoker
from tests.fixtures.lambda_events import authorized, http_event, path_parameter_names
from tests.fixtures.secrets_extension import serve_secrets_extension
from tests.fixtures.service import FUNCTIONS, handler_module, read_route
from tests.fixtures.stack import free_port
from tests.fixtures.tokens import Tokens

ZIP_INVOKER = Path(zip_invoker.__file__)

__all__ = [
    "MODULE_GROUPS",
    "SCENARIOS",
    "SECRET_SCENARIOS",
    "build_with_sources",
    "import_time_by_group",
    "measure_cold_starts",
]

SCENARIOS = (
    "bare interpreter",
    "import",
    "import, no bytecode",
    "import + first request, DATABASE_URL",
    "import + first request, secret via the extension",
    "import + first request, secret via boto3",
)
SECRET_SCENARIOS = SCENARIOS[-2:]
RUNTIME_PACKAGES = (
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "python-dateutil",
    "six",
    "urllib3",
)
REGION = "eu-central-1"
MODULE_GROUPS = (
    ("SQLAlchemy ORM", ("sqlalchemy.orm",)),
    ("SQLAlchemy asyncio", ("sqlalchemy.ext.asyncio", "greenlet")),
    ("SQLAlchemy Core", ("sqlalchemy",)),
    ("psycopg", ("psycopg", "psycopg_binary")),
    ("pydantic-settings", ("pydantic_settings", "dotenv")),
    ("pydantic", ("pydantic", "pydantic_core", "annotated_types", "typing_inspection")),
    ("FastAPI + Starlette", ("fastapi", "starlette", "anyio", "sniffio", "annotated_doc")),
    ("opentelemetry (FastAPI's)", ("opentelemetry",)),
    ("Mangum", ("mangum",)),
    ("Powertools", ("aws_lambda_powertools", "jmespath")),
    ("PyJWT + cryptography", ("jwt", "cryptography", "_cffi_backend", "cffi")),
    ("boto3", ("boto3", "botocore", "s3transfer", "urllib3", "dateutil")),
    ("project (shared, functions)", ("shared", "functions")),
)
"""Module groups of an import, by the first prefix that matches; the rest is "other"."""
OTHER_MODULES = "other (standard library, typing_extensions, ...)"
_IMPORT_TIME = re.compile(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)")


def _group_of(module: str) -> str:
    for group, prefixes in MODULE_GROUPS:
        if any(module == prefix or module.startswith(f"{prefix}.") for prefix in prefixes):
            return group
    return OTHER_MODULES


def import_time_by_group(importtime_output: str) -> dict[str, float]:
    """Seconds of `-X importtime` output by module group (each module's own time, summed)."""
    by_group = dict.fromkeys([group for group, _ in MODULE_GROUPS] + [OTHER_MODULES], 0.0)
    for line in importtime_output.splitlines():
        match = _IMPORT_TIME.match(line)
        if match:
            by_group[_group_of(match[2])] += int(match[1]) / 1e6
    return by_group


def build_with_sources(dist: Path, architecture: str) -> dict[str, Path]:
    """Each function's zip with its dependencies' sources and no bytecode: the shipped zips hold
    the dependencies as bytecode alone, so the cold start without bytecode needs these."""
    service = read_service()
    shutil.rmtree(dist, ignore_errors=True)
    (dist / ".build").mkdir(parents=True)
    zips: dict[str, Path] = {}
    for function in service.functions:
        staging = dist / ".build" / function.name
        install_dependencies(function.groups, architecture, service.python_version, staging)
        slim(staging)
        copy_code(function, staging)
        zips[function.name] = dist / f"{function.name}.zip"
        write_zip(staging, zips[function.name])
    shutil.rmtree(dist / ".build")
    return zips


def _unpack_read_only(zip_path: Path, target: Path, *, bytecode: bool) -> None:
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(target)
    if not bytecode:
        for cache in sorted(target.rglob("__pycache__")):
            shutil.rmtree(cache)
    for path in sorted(target.rglob("*"), reverse=True):
        path.chmod(
            stat.S_IREAD | stat.S_IRGRP | stat.S_IROTH | (stat.S_IEXEC if path.is_dir() else 0)
        )


def _remove(path: Path) -> None:
    if path.exists():
        for child in path.rglob("*"):
            child.chmod(0o755 if child.is_dir() else 0o644)
        shutil.rmtree(path)


def _install_runtime_packages(target: Path) -> None:
    """boto3 and its dependencies as in this virtualenv, with bytecode, like /var/runtime."""
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in RUNTIME_PACKAGES]
    uv = Path(sys.executable).parent / "uv"
    done = subprocess.run(
        [str(uv if uv.exists() else "uv"), "pip", "install", "--quiet", "--no-deps",
         "--only-binary", ":all:", "--target", str(target), *pins],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise BenchError(f"could not install the runtime's boto3:\n{done.stderr}")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(target)], check=True)


@contextmanager
def _secret_served_locally(database_url: str) -> Iterator[dict[str, dict[str, str]]]:
    """Moto's server on loopback holding the URL, and the extension's stand-in reading from
    it; per secret scenario, the environment that points the function at them."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }
    try:
        client = boto3.client(
            "secretsmanager",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            region_name=REGION,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        arn = client.create_secret(Name="bench/database-url", SecretString=database_url)["ARN"]
        with serve_secrets_extension(client) as extension:
            yield {
                SECRET_SCENARIOS[0]: {"DATABASE_SECRET_ARN": arn} | extension.environment(),
                SECRET_SCENARIOS[1]: {"DATABASE_SECRET_ARN": arn} | env,
            }
    finally:
        server.stop()


def _function_env(task_root: Path, runtime: Path, function: str, tokens: Tokens) -> dict[str, str]:
    """What every scenario's process gets: the zip and the runtime's packages on the path."""
    return {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{task_root}{os.pathsep}{runtime}",
        "POWERTOOLS_SERVICE_NAME": "bench",
        "AWS_LAMBDA_FUNCTION_NAME": f"bench-{function}",
        "PSYCOPG_IMPL": "binary",  # as on Lambda, which has no other libpq
        "SUPABASE_URL": tokens.supabase_url,
    }


def measure_cold_starts(
    zips: dict[str, Path],
    with_sources: dict[str, Path],
    database_url: str,
    read_id: int,
    work: Path,
    rounds: int,
    tokens: Tokens,
) -> tuple[dict[str, dict[str, list[float]]], dict[str, dict[str, list[float]]]]:
    """Seconds per process, by function, then scenario; and seconds of each function's import
    by module group. `with_sources`: the same zips with the dependencies' sources, for the
    scenario without bytecode. A first request carries a token (/connections: the service
    role's), so it includes fetching the JWKS from `tokens`."""
    _remove(work)
    runtime = work / "runtime"
    _install_runtime_packages(runtime)
    events: dict[str, Path] = {}
    for function, zip_path in zips.items():
        if not FUNCTIONS[function].routes:
            continue  # a scheduled function: no request to time, and no caller waits for it
        _unpack_read_only(zip_path, work / "with-bytecode" / function, bytecode=True)
        _unpack_read_only(with_sources[function], work / "no-bytecode" / function, bytecode=False)
        # A read of one row (`read_id`) where the function has one, as the README's figures.
        gets = [
            r for r in FUNCTIONS[function].routes if r.method == "GET" and path_parameter_names(r)
        ]
        route = gets[0] if gets else read_route(FUNCTIONS[function])
        event = http_event(route, params=dict.fromkeys(path_parameter_names(route), read_id))
        # connections answers only the service role; the others take a user's token.
        event = authorized(
            event,
            tokens.service_role()
            if function == "connections"
            else tokens.token(user_id=BENCH_USER.user_id),
        )
        events[function] = work / f"{function}-event.json"
        events[function].write_text(json.dumps(event))
    python = getattr(sys, "_base_executable", sys.executable)
    samples: dict[str, dict[str, list[float]]] = {f: {s: [] for s in SCENARIOS} for f in events}
    groups: dict[str, dict[str, list[float]]] = {f: {} for f in events}
    with _secret_served_locally(database_url) as secret_envs:
        for round_number in range(rounds):
            for function in events:
                shift = round_number % len(SCENARIOS)
                for scenario in SCENARIOS[shift:] + SCENARIOS[:shift]:
                    root = work / ("no-bytecode" if "no bytecode" in scenario else "with-bytecode")
                    task_root = root / function
                    env = _function_env(task_root, runtime, function, tokens)
                    declared = FUNCTIONS[function]
                    args = [str(ZIP_INVOKER), f"{handler_module(declared)}:{declared.handler_name}"]
                    if scenario == "bare interpreter":
                        args = ["-c", "pass"]
                    elif scenario.endswith("DATABASE_URL"):
                        env["DATABASE_URL"] = database_url
                        args.append(str(events[function]))
                    elif scenario in secret_envs:
                        env |= secret_envs[scenario]
                        args.append(str(events[function]))
                    started = time.perf_counter()
                    done = subprocess.run(
                        [python, "-S", "-B", *args],
                        cwd=task_root, env=env, capture_output=True, text=True, timeout=120,
                    )  # fmt: skip
                    elapsed = time.perf_counter() - started
                    failed = done.returncode != 0 or (
                        "first request" in scenario and '"statusCode": 200' not in done.stderr
                    )
                    if failed:
                        raise BenchError(f"{function}, {scenario}:\n{done.stderr[-2000:]}")
                    samples[function][scenario].append(elapsed)
                task_root = work / "with-bytecode" / function
                declared = FUNCTIONS[function]
                done = subprocess.run(
                    [python, "-S", "-B", "-X", "importtime", str(ZIP_INVOKER),
                     f"{handler_module(declared)}:{declared.handler_name}"],
                    cwd=task_root, env=_function_env(task_root, runtime, function, tokens),
                    capture_output=True, text=True, timeout=120,
                )  # fmt: skip
                if done.returncode != 0:
                    raise BenchError(f"{function}, import time:\n{done.stderr[-2000:]}")
                for group, seconds in import_time_by_group(done.stderr).items():
                    groups[function].setdefault(group, []).append(seconds)
    _remove(work)
    return samples, groups
