"""The starter made someone's own: in a copy, two functions scaffolded and the sample removed.

What a team does in its first hour, done to a temporary copy of the working tree (the files
git tracks or would add, as they are now, so uncommitted changes count; the project's .venv
and node_modules linked, not reinstalled):

1. `python -m infra.scaffold orders` (FastAPI) and `python -m infra.scaffold ping --kind plain`;
2. the sample removed: functions/items/, its migrations (Alembic branch `items`), its entries in
   serverless.yml, its role in infra/cloudformation/function-roles.yml, and the test and bench
   modules that import it, directly or through another one.

Then, in the copy and side by side: ruff, ruff format and mypy strict; the generated tests
against a Postgres + PgBouncer stack of their own (this session's TEST_* ports + 7, so the two
stacks never meet); the check that each FastAPI router and serverless.yml agree; the package
build and its deploy check.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from infra import PROJECT_ROOT
from infra.package import MANIFEST_NAME
from infra.scaffold import ROLES, Names, role_block, round_trip_yaml
from infra.serverless_config import read_service
from tests.conftest import environment_outside_the_session
from tests.fixtures.stack import TEST_PORTS, port_for
from tests.fixtures.working_tree import LINKED, copy_working_tree

SAMPLE = "items"
ROUTES_TEST = "tests/package/test_routes.py"
TEST_AND_BENCH = ("tests", "bench")
SCAFFOLDED = {"orders": "fastapi", "ping": "plain"}
PORT_OFFSET = 7
TIMEOUT_S = 300
# functions.items or functions/items as a module or path, not a mapping's .items() method.
SAMPLE_REFERENCE = re.compile(rf"\bfunctions[./]{SAMPLE}\b(?!\()")
CODE_SUFFIXES = {".py", ".yml", ".yaml", ".toml", ".json", ".cfg", ".ini", ".mako"}


@dataclass
class AdaptedCopy:
    """The adapted copy, what was removed from it, and the checks running in it."""

    root: Path
    dist: Path
    removed: list[Path]
    checks: dict[str, subprocess.Popen[str]]

    def finish(self, check: str) -> tuple[int, str]:
        """Wait for one check; its exit code and everything it printed."""
        output, _ = self.checks[check].communicate(timeout=TIMEOUT_S)
        return self.checks[check].returncode, output


def imported_modules(path: Path) -> set[str]:
    """Every module a Python file imports, `from a import b` counted as `a` and `a.b`."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def within(module: str, packages: set[str]) -> bool:
    """Whether `module` is one of `packages` or inside one."""
    return any(module == package or module.startswith(f"{package}.") for package in packages)


def remove_modules_importing(root: Path, package: str) -> list[Path]:
    """Delete the test and bench modules that import `package`, or a module deleted here;
    return them."""
    modules = {
        ".".join(path.relative_to(root).with_suffix("").parts): path
        for folder in TEST_AND_BENCH
        for path in (root / folder).rglob("*.py")
    }
    gone = {package}
    removed: list[Path] = []
    while dependent := [
        name
        for name, path in modules.items()
        if any(within(module, gone) for module in imported_modules(path))
    ]:
        for name in dependent:
            removed.append(modules.pop(name).relative_to(root))
            (root / removed[-1]).unlink()
            gone.add(name)
    return removed


def remove_sample(root: Path) -> list[Path]:
    """Remove the sample as README says; return every path removed."""
    removed = [Path("functions", SAMPLE)]
    shutil.rmtree(root / "functions" / SAMPLE)
    for revision in ScriptDirectory(str(root / "infra" / "migrations")).walk_revisions():
        if SAMPLE in revision.branch_labels:
            removed.append(Path(revision.path).relative_to(root))
            Path(revision.path).unlink()
    yaml = round_trip_yaml()
    serverless = root / "serverless.yml"
    config = yaml.load(serverless)
    del config["functions"][SAMPLE]
    del config["params"]["default"][Names(SAMPLE).concurrency_param]
    config["custom"]["dependencyGroups"].pop(SAMPLE, None)
    yaml.dump(config, serverless)
    roles = root / ROLES
    sample_role = role_block(Names(SAMPLE), "fastapi")
    assert sample_role in roles.read_text()
    roles.write_text(roles.read_text().replace(sample_role, ""))
    return removed + remove_modules_importing(root, f"functions.{SAMPLE}")


def start(command: str, root: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """Run a shell command in the copy, its own process group, output collected."""
    return subprocess.Popen(
        ["bash", "-c", f"set -e; {command}"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[str]) -> None:
    """End a check still running: SIGINT, so a pytest session stops the stack it started."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


@pytest.fixture(scope="module")
def adapted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdaptedCopy]:
    """The copy, scaffolded and without the sample, with its three checks started."""
    work = tmp_path_factory.mktemp("adapted")
    root, dist = work / "repo", work / "dist"
    copy_working_tree(PROJECT_ROOT, root)
    env = environment_outside_the_session()
    python = shlex.quote(sys.executable)
    for name, kind in SCAFFOLDED.items():
        done = subprocess.run(
            [sys.executable, "-m", "infra.scaffold", name, "--kind", kind],
            cwd=root, env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    removed = remove_sample(root)
    ports = {name: str(port_for(name) + PORT_OFFSET) for name in TEST_PORTS}
    generated = " ".join(f"tests/integration/test_{name}.py" for name in SCAFFOLDED)
    checks = {
        "lint": start(
            f"{python} -m ruff check .; {python} -m ruff format --check .; {python} -m mypy",
            root, env,
        ),
        "tests": start(f"{python} -m pytest -p no:cacheprovider {generated}", root, env | ports),
        "routes": start(f"{python} -m pytest -p no:cacheprovider -v {ROUTES_TEST}", root, env),
        "package": start(
            f"{python} -m infra.package build; {python} -m infra.package verify",
            root, env | {"ARTIFACTS_DIR": str(dist)},
        ),
    }  # fmt: skip
    try:
        yield AdaptedCopy(root=root, dist=dist, removed=removed, checks=checks)
    finally:
        for process in checks.values():
            stop(process)


def test_nothing_outside_the_tests_names_the_removed_sample(adapted: AdaptedCopy) -> None:
    """Its folder, its migrations and its serverless.yml entries were all the platform held."""
    mentions = [
        str(path.relative_to(adapted.root))
        for path in adapted.root.rglob("*")
        if path.is_file()
        and not path.is_relative_to(adapted.root / "tests")
        and not any(part in LINKED for part in path.relative_to(adapted.root).parts)
        and (path.suffix in CODE_SUFFIXES or path.name in ("Makefile", "run"))
        and SAMPLE_REFERENCE.search(path.read_text(errors="replace"))
    ]
    assert mentions == []


def test_the_adapted_copy_passes_ruff_and_mypy_strict(adapted: AdaptedCopy) -> None:
    code, output = adapted.finish("lint")

    assert code == 0, f"removed: {[str(path) for path in adapted.removed]}\n{output}"


def test_the_generated_tests_pass_against_a_stack_of_their_own(adapted: AdaptedCopy) -> None:
    code, output = adapted.finish("tests")

    assert code == 0, output
    assert f"{len(SCAFFOLDED)} passed" in output


def test_the_scaffolded_fastapi_function_agrees_with_serverless_yml(adapted: AdaptedCopy) -> None:
    code, output = adapted.finish("routes")

    assert code == 0, output
    fastapi_functions = [name for name, kind in SCAFFOLDED.items() if kind == "fastapi"]
    for name in fastapi_functions:
        assert (
            f"test_the_router_and_serverless_yml_declare_the_same_routes[{name}] PASSED" in output
        )
    assert f"[{SAMPLE}]" not in output


def test_the_package_build_ships_the_new_functions_and_not_the_sample(
    adapted: AdaptedCopy,
) -> None:
    code, output = adapted.finish("package")

    assert code == 0, output
    manifest = json.loads((adapted.dist / MANIFEST_NAME).read_text())
    declared = {f.name for f in read_service(adapted.root / "serverless.yml").functions}
    assert set(manifest["functions"]) == declared
    assert set(SCAFFOLDED) <= declared
    assert SAMPLE not in declared
    for name, kind in SCAFFOLDED.items():
        with zipfile.ZipFile(adapted.dist / manifest["functions"][name]["zip"]) as archive:
            ships_fastapi = "fastapi/__init__.pyc" in archive.namelist()
            assert f"functions/{name}/handler.py" in archive.namelist()
        assert ships_fastapi == (kind == "fastapi"), name
