"""Build one Lambda zip per function, without Docker: `python -m infra.package --arch arm64`.

serverless.yml ships these zips (`package.artifact`), because the framework's own packaging
can neither install Linux wheels for another architecture nor ship bytecode. Each zip holds:

- the function's own code only: `shared/` and `functions/<name>/`, never tests, docs, caches
  or local-stack files;
- the dependencies pinned in uv.lock, only the groups the function needs
  (`custom.dependencyGroups` in serverless.yml: FastAPI only where it is used), as Linux wheels
  for the target architecture and the runtime's Python (psycopg 3.3 ships `manylinux_2_28`
  wheels for aarch64; older platform tags would silently fall back to psycopg 3.2);
- each package's `.dist-info` (SQLAlchemy refuses a psycopg whose version reads 0.0.0.0);
- no boto3: the Lambda runtime provides it;
- `.pyc` files compiled by the runtime's Python version with unchecked hashes: Lambda's code
  directory is read-only, so without them Python compiles every module at every cold start,
  which more than doubles the import time of a FastAPI function.
"""

from __future__ import annotations

import argparse
import compileall
import os
import py_compile
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from infra.slim import slim

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DIST = PROJECT_ROOT / "dist"
PLATFORMS = {"arm64": "aarch64-manylinux_2_28", "x86_64": "x86_64-manylinux_2_28"}
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer")
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same input gives the same zip


@dataclass(frozen=True)
class Function:
    """One function of serverless.yml: its name, code directory and dependency groups."""

    name: str
    code_dir: Path
    groups: tuple[str, ...]


@dataclass(frozen=True)
class Service:
    """What the build needs from serverless.yml."""

    name: str
    python_version: str
    functions: tuple[Function, ...]


def read_service(config_file: Path = PROJECT_ROOT / "serverless.yml") -> Service:
    """The runtime's Python version and the functions, from serverless.yml."""
    config: dict[str, Any] = yaml.safe_load(config_file.read_text())
    runtime: str = config["provider"]["runtime"]
    groups: dict[str, list[str]] = config.get("custom", {}).get("dependencyGroups", {})
    functions = tuple(
        Function(
            name=name,
            code_dir=Path(spec["handler"]).parent,
            groups=tuple(groups.get(name, [])),
        )
        for name, spec in config["functions"].items()
    )
    return Service(
        name=config["service"], python_version=runtime.removeprefix("python"), functions=functions
    )


def _uv(*args: str) -> str:
    """Run the uv pinned in the dev group (beside this interpreter), else the one on PATH."""
    pinned = Path(sys.executable).parent / "uv"
    uv = str(pinned) if pinned.exists() else "uv"
    done = subprocess.run([uv, *args], cwd=PROJECT_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"uv {args[0]} failed:\n{done.stderr}")
    return done.stdout


def install_dependencies(groups: tuple[str, ...], arch: str, python: str, target: Path) -> None:
    """Install the locked dependencies of these groups as wheels for Lambda's platform."""
    group_args = [arg for group in groups for arg in ("--group", group)]
    requirements = _uv(
        "export", "--frozen", "--no-default-groups", *group_args,
        "--no-hashes", "--no-emit-project", "--no-annotate", "--no-header",
    )  # fmt: skip
    requirements_file = target.with_suffix(".requirements.txt")
    requirements_file.write_text(requirements)
    _uv(
        "pip", "install", "--quiet", "--no-deps", "--only-binary", ":all:",
        "--python-platform", PLATFORMS[arch], "--python-version", python,
        "--target", str(target), "--requirement", str(requirements_file),
    )  # fmt: skip
    for name in ("bin", *RUNTIME_PROVIDED):
        shutil.rmtree(target / name, ignore_errors=True)
    (target / ".lock").unlink(missing_ok=True)  # uv's lock on the target folder


def copy_code(function: Function, target: Path) -> None:
    """The shared package and this function's package, sources only."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(PROJECT_ROOT / "shared", target / "shared", ignore=ignore)
    functions_dir = target / "functions"
    functions_dir.mkdir()
    shutil.copy2(PROJECT_ROOT / "functions" / "__init__.py", functions_dir / "__init__.py")
    shutil.copytree(PROJECT_ROOT / function.code_dir, target / function.code_dir, ignore=ignore)


def compile_bytecode(target: Path, python: str) -> None:
    """Compile every module with this interpreter, which must be the runtime's version."""
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if running != python:
        raise SystemExit(f"compile with Python {python} (the Lambda runtime), not {running}")
    compiled = compileall.compile_dir(
        target,
        quiet=2,
        workers=os.cpu_count() or 1,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    if not compiled:
        raise SystemExit(f"bytecode compilation failed under {target}")


def write_zip(source: Path, zip_path: Path) -> None:
    """A reproducible zip: sorted entries, fixed timestamps, world-readable files."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path in sorted(source.rglob("*")):
            if path.is_dir():
                continue
            entry = zipfile.ZipInfo(path.relative_to(source).as_posix(), ZIP_DATE)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, path.read_bytes())


def build(arch: str, service: Service | None = None) -> dict[str, Path]:
    """Build every function's zip for `arch`; dependencies are installed once per group set."""
    service = service or read_service()
    work = DIST / ".build" / arch
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    installed: dict[tuple[str, ...], Path] = {}
    zips: dict[str, Path] = {}
    for function in service.functions:
        if function.groups not in installed:
            site = work / ("deps-" + "-".join(function.groups or ("core",)))
            install_dependencies(function.groups, arch, service.python_version, site)
            slim(site)
            compile_bytecode(site, service.python_version)
            installed[function.groups] = site
        staging = work / function.name
        shutil.copytree(installed[function.groups], staging)
        copy_code(function, staging)
        compile_bytecode(staging / "shared", service.python_version)
        compile_bytecode(staging / "functions", service.python_version)
        zips[function.name] = DIST / arch / f"{function.name}.zip"
        write_zip(staging, zips[function.name])
    shutil.rmtree(work)
    return zips


def main(argv: list[str] | None = None) -> int:
    """Build the zips and report their sizes."""
    parser = argparse.ArgumentParser(prog="python -m infra.package", description=__doc__)
    parser.add_argument("--arch", choices=sorted(PLATFORMS), default="arm64")
    args = parser.parse_args(argv)
    for name, zip_path in build(args.arch).items():
        with zipfile.ZipFile(zip_path) as archive:
            unzipped = sum(info.file_size for info in archive.infolist())
        sys.stdout.write(
            f"{zip_path.relative_to(PROJECT_ROOT)}: {zip_path.stat().st_size / 2**20:.1f} MiB"
            f" zipped, {unzipped / 2**20:.1f} MiB unzipped ({name})\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
