"""What `make dev` watches to restart serverless offline: the functions' code and routes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from infra.dev import changed_file, source_snapshot


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with one function, the shared package and serverless.yml."""
    for name in ("functions/orders/handler.py", "shared/_engine.py", "serverless.yml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("# v1\n")
    return tmp_path


@pytest.mark.parametrize(
    ("change", "reported"),
    [
        (lambda root: (root / "shared/_engine.py").write_text("# v2\n"), "shared/_engine.py"),
        (lambda root: (root / "serverless.yml").write_text("# v2\n"), "serverless.yml"),
        (lambda root: (root / "functions/orders/routes.py").touch(), "functions/orders/routes.py"),
        (
            lambda root: (root / "functions/orders/handler.py").unlink(),
            "functions/orders/handler.py",
        ),
    ],
    ids=["shared edited", "routes edited", "module added", "module removed"],
)
def test_an_edit_addition_or_removal_is_a_change_naming_the_file(
    project: Path, change: Callable[[Path], object], reported: str
) -> None:
    before = source_snapshot(project)
    change(project)

    assert changed_file(before, source_snapshot(project), project) == reported


def test_bytecode_editor_files_and_other_folders_are_not_changes(project: Path) -> None:
    """The restarted functions write bytecode as they import: watched, it would loop."""
    before = source_snapshot(project)
    (project / "functions/orders/__pycache__").mkdir()
    (project / "functions/orders/__pycache__/handler.cpython-312.pyc").write_bytes(b"\0")
    (project / "shared/.db.py.swp").write_bytes(b"\0")
    (project / "shared/_engine.py~").write_text("# v0\n")
    (project / "tests").mkdir()
    (project / "tests/test_orders.py").write_text("# new\n")

    assert changed_file(before, source_snapshot(project), project) is None
