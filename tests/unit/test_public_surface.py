"""The platform's front door: two façades, pinned, inert on import, the only way in for functions.

Adding a name to a façade is a decision (it becomes something every copy of this repository may
depend on), so the lists are pinned here, as httpx pins `httpx.__all__`.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from infra import PROJECT_ROOT

PLAIN = [
    "AppError",
    "Base",
    "ConflictError",
    "ForbiddenError",
    "Identity",
    "LambdaEvent",
    "LambdaResponse",
    "NotAuthenticatedError",
    "NotFoundError",
    "ServiceUnavailableError",
    "acting_as",
    "acting_as_login_role",
    "autocommit_connection",
    "json_response",
    "lambda_boundary",
    "plain_handler",
    "pool_size_per_instance",
    "publish_connection_usage",
    "publish_pooler_clients",
    "read_connection_report",
    "read_connection_usage",
    "read_session",
    "request_header",
    "require_identity",
    "require_service_role",
    "scheduled_handler",
    "session_scope",
    "transaction",
]
FASTAPI = [
    "AppError",
    "Base",
    "ConflictError",
    "ForbiddenError",
    "Identity",
    "NotAuthenticatedError",
    "NotFoundError",
    "PublicReadSessionDep",
    "ServiceRoleDep",
    "ServiceUnavailableError",
    "UserDep",
    "UserReadSessionDep",
    "UserSessionDep",
    "async_read_session",
    "async_session_scope",
    "create_app",
    "error_responses",
    "lambda_handler",
]
FACADES = {"shared.plain": PLAIN, "shared.fastapi": FASTAPI}

# pydantic reads its own plugin switch whenever any model is defined: the library's setting,
# not the platform's configuration, so it is the one read allowed.
LIBRARY_READS = {"PYDANTIC_DISABLE_PLUGINS"}
PRELOADED = (
    "aws_lambda_powertools",
    "aws_lambda_powertools.logging",
    "fastapi",
    "jwt",
    "mangum",
    "psycopg",
    "pydantic",
    "pydantic_settings",
    "sqlalchemy",
    "sqlalchemy.ext.asyncio",
    "sqlalchemy.orm",
)

# Run in a fresh interpreter: records every environment read and SnapStart registration that
# importing every public name causes. Libraries are imported first, with the real environment,
# so that what is recorded is the platform's own doing.
IMPORT_EVERY_NAME = """
import importlib, json, os, sys, types
from collections.abc import MutableMapping

for library in {preloaded!r}:
    importlib.import_module(library)

class RecordingEnviron(MutableMapping):
    def __init__(self, real):
        self.real, self.read = real, []
    def __getitem__(self, name):
        self.read.append(name)
        return self.real[name]
    def __setitem__(self, name, value):
        self.real[name] = value
    def __delitem__(self, name):
        del self.real[name]
    def __iter__(self):
        self.read.append("<every variable>")
        return iter(self.real)
    def __len__(self):
        return len(self.real)

registered = []
runtime = types.ModuleType("snapshot_restore_py")
runtime.register_before_snapshot = registered.append
runtime.register_after_restore = registered.append
sys.modules["snapshot_restore_py"] = runtime
os.environ = environ = RecordingEnviron(os.environ)
for facade, names in {facades!r}.items():
    module = importlib.import_module(facade)
    for name in names:
        getattr(module, name)
print(json.dumps({{"read": environ.read, "registered": [repr(hook) for hook in registered]}}))
"""

# Every name of the plain façade, each imported on first use: what a plain function can load.
IMPORT_PLAIN_ONLY = """
import json, sys
import shared.plain
for name in shared.plain.__all__:
    getattr(shared.plain, name)
print(json.dumps(sorted(sys.modules)))
"""


def fresh_interpreter(code: str) -> object:
    """What `code` prints as JSON, run by a new interpreter from the project's root."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize(("facade", "names"), FACADES.items())
def test_the_public_names_are_pinned_and_resolve(facade: str, names: list[str]) -> None:
    module = importlib.import_module(facade)

    assert sorted(module.__all__) == names
    assert [name for name in names if not hasattr(module, name)] == []


def test_importing_every_public_name_reads_no_environment_and_registers_no_hook() -> None:
    code = IMPORT_EVERY_NAME.format(preloaded=PRELOADED, facades=FACADES)
    recorded = fresh_interpreter(code)

    assert isinstance(recorded, dict)
    assert [name for name in recorded["read"] if name not in LIBRARY_READS] == []
    assert recorded["registered"] == []


def test_the_plain_facade_imports_neither_fastapi_nor_mangum() -> None:
    modules = fresh_interpreter(IMPORT_PLAIN_ONLY)

    assert isinstance(modules, list)
    assert "shared.plain" in modules
    assert [name for name in modules if name.partition(".")[0] in {"fastapi", "mangum"}] == []


def shared_imports(source: str) -> set[str]:
    """The `shared` modules a piece of Python source imports, however it spells the import."""
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "shared":
                imported |= {f"shared.{alias.name}" for alias in node.names}
            elif node.module.startswith("shared."):
                imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported |= {
                alias.name
                for alias in node.names
                if alias.name == "shared" or alias.name.startswith("shared.")
            }
    return imported


def function_sources() -> dict[Path, str]:
    """The sample functions, and the scaffold's templates as the Python they become."""
    sources = {path: path.read_text() for path in (PROJECT_ROOT / "functions").rglob("*.py")}
    for path in (PROJECT_ROOT / "infra" / "templates").rglob("*.py.tmpl"):
        # `${name}` placeholders are not Python; any identifier stands in for them.
        sources[path] = re.sub(r"\$\{(\w+)\}", r"_\1_", path.read_text())
    return sources


def test_functions_and_templates_import_the_platform_through_the_facades_only() -> None:
    sources = function_sources()
    through_a_side_door = {
        str(path.relative_to(PROJECT_ROOT)): sorted(imported - set(FACADES))
        for path, source in sources.items()
        if (imported := shared_imports(source)) - set(FACADES)
    }

    assert len(sources) > 10  # the sample's modules and every template
    assert through_a_side_door == {}
