"""The tests mirror the platform: each private module `shared/_x.py` has a test module
`tests/<kind>/test_x.py`, so the tests of any module are found by its name.

Kinds are folders (unit, integration, e2e, package); a module needing the real stack has its
twin under integration. The façades (`shared/plain.py`, `shared/fastapi.py`) are pinned by
test_public_surface.py. Scenario tests that prove a property across modules keep names of their own.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
KINDS = ("unit", "integration", "e2e", "package")


def platform_modules(root: Path) -> list[str]:
    """The private modules of `shared/`, by the name their test modules carry."""
    return sorted(
        path.stem.removeprefix("_")
        for path in (root / "shared").glob("_*.py")
        if not path.stem.startswith("__")
    )


def modules_with_tests(root: Path) -> set[str]:
    """What the test modules of every kind are named for."""
    return {
        path.stem.removeprefix("test_")
        for kind in KINDS
        for path in (root / "tests" / kind).glob("test_*.py")
    }


def test_each_platform_module_has_a_test_module_named_for_it() -> None:
    tested = modules_with_tests(PROJECT_ROOT)
    untested = [
        f"shared/_{name}.py has no tests/<kind>/test_{name}.py"
        for name in platform_modules(PROJECT_ROOT)
        if name not in tested
    ]

    assert untested == []


def test_the_check_sees_the_platform_and_its_tests() -> None:
    """Guards the check above against passing vacuously on a moved folder or a changed prefix."""
    modules = platform_modules(PROJECT_ROOT)

    assert {"boundary", "tokens", "signing_keys", "engine", "sessions"} <= set(modules)
    assert not any(name.startswith("_") for name in modules)
    assert set(modules) <= modules_with_tests(PROJECT_ROOT)
