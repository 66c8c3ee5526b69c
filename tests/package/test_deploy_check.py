"""A deploy ships exactly the working tree: zips that no longer match it are refused.

`make package` and `make deploy` build, then run `python -m infra.package verify` right before
`serverless`. These tests build as they do and then change what a developer changes: a
function's source, the architecture in serverless.yml, uv.lock, a zip. Working trees that are
edited are copies of the project in temporary folders.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from infra import PROJECT_ROOT
from infra.package import (
    ARTIFACTS_DIR_VARIABLE,
    PLATFORMS,
    PackageError,
    build,
    main,
    verify,
)
from infra.serverless_config import read_service

PROJECT_FILES = ("serverless.yml", "pyproject.toml", "uv.lock", "shared", "functions")
SERVICE = read_service()
ARCHITECTURE = SERVICE.architecture
OTHER_ARCHITECTURE = next(arch for arch in PLATFORMS if arch != ARCHITECTURE)
EDITED, *UNTOUCHED = SERVICE.functions
"""The function whose own source a test edits, and those it must leave current."""


def copy_project(destination: Path) -> Path:
    """The files a build reads, copied as they are now."""
    for name in PROJECT_FILES:
        source = PROJECT_ROOT / name
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__")
            shutil.copytree(source, destination / name, ignore=ignore)
        else:
            destination.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def refusal(dist: Path, project: Path | None = None) -> str:
    """The one line `verify` refuses the zips in `dist` with."""
    service = read_service(project / "serverless.yml") if project else None
    with pytest.raises(PackageError) as refused:
        verify(dist, service=service)
    message = str(refused.value)
    assert "\n" not in message
    return message


def test_a_source_edited_after_the_build_is_refused(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    service = read_service(project / "serverless.yml")
    build(project / "dist", service=service)
    verify(project / "dist", service=service)  # the control: a fresh build passes

    with (project / EDITED.handler_file).open("a") as source:
        source.write("\n# edited after the build\n")

    message = refusal(project / "dist", project)
    assert f"{EDITED.name}: sources changed" in message
    for function in UNTOUCHED:
        assert function.name not in message
    assert "make package" in message


def test_a_shared_module_edited_after_the_build_makes_every_zip_stale(
    deployable: Path, tmp_path: Path
) -> None:
    project = copy_project(tmp_path / "project")
    verify(deployable, service=read_service(project / "serverless.yml"))

    with (project / "shared" / "_errors.py").open("a") as source:
        source.write("\n# edited after the build\n")

    message = refusal(deployable, project)
    functions = ", ".join(function.name for function in SERVICE.functions)
    assert f"{functions}: sources changed" in message


def test_switching_the_architecture_after_the_build_is_refused(
    deployable: Path, tmp_path: Path
) -> None:
    project = copy_project(tmp_path / "project")
    config = project / "serverless.yml"
    config.write_text(
        config.read_text().replace(
            f"architecture: {ARCHITECTURE}", f"architecture: {OTHER_ARCHITECTURE}"
        )
    )
    assert read_service(config).architecture == OTHER_ARCHITECTURE

    message = refusal(deployable, project)
    assert (
        f"architecture is {ARCHITECTURE} in the build, {OTHER_ARCHITECTURE} in serverless.yml"
        in message
    )


def test_zips_built_for_another_architecture_are_refused(request: pytest.FixtureRequest) -> None:
    zips: dict[str, Path] = request.getfixturevalue(f"zips_{OTHER_ARCHITECTURE}")

    message = refusal(next(iter(zips.values())).parent)

    assert f"architecture is {OTHER_ARCHITECTURE} in the build" in message


def test_a_changed_lockfile_is_refused(deployable: Path, tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    with (project / "uv.lock").open("a") as lock:
        lock.write("\n")

    assert "uv_lock changed since the build" in refusal(deployable, project)


@pytest.mark.parametrize("change", ["altered", "missing"])
def test_an_altered_or_missing_zip_is_refused(
    deployable: Path, tmp_path: Path, change: str
) -> None:
    dist = tmp_path / "dist"
    shutil.copytree(deployable, dist)
    zip_path = dist / f"{EDITED.name}.zip"
    if change == "altered":
        with zip_path.open("ab") as zip_file:
            zip_file.write(b"\0")
    else:
        zip_path.unlink()

    assert f"{EDITED.name}: zip missing or altered" in refusal(dist)


def test_a_folder_without_a_build_is_refused(tmp_path: Path) -> None:
    assert "holds no build" in refusal(tmp_path)


def test_deploy_command_refuses_stale_zips_in_one_line(
    deployable: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dist = tmp_path / "dist"
    shutil.copytree(deployable, dist)
    monkeypatch.setenv(ARTIFACTS_DIR_VARIABLE, str(dist))
    assert main(["verify"]) == 0
    (dist / f"{EDITED.name}.zip").write_bytes(b"an older zip")

    assert main(["verify"]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("package: refusing the zips in ")


def test_the_command_line_cannot_ask_for_another_architecture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """serverless.yml is the one place the architecture is decided."""
    monkeypatch.setenv(ARTIFACTS_DIR_VARIABLE, str(tmp_path))

    with pytest.raises(SystemExit) as stopped:
        main(["build", "--arch", OTHER_ARCHITECTURE])

    assert stopped.value.code == 2
    assert "unrecognized arguments: --arch" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_architecture_lambda_does_not_offer_is_refused_before_building(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    config = project / "serverless.yml"
    config.write_text(
        config.read_text().replace(f"architecture: {ARCHITECTURE}", "architecture: aarch64")
    )
    dist = tmp_path / "dist"

    with pytest.raises(
        PackageError, match="must be one of arm64, x86_64 written out, not 'aarch64'"
    ):
        build(dist, service=read_service(config))

    assert not dist.exists()
