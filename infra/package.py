"""Build one Lambda zip per function, without Docker, and refuse to deploy stale ones.

    python -m infra.package build     # `make package` / `make deploy`: every zip, into dist/
    python -m infra.package verify    # right before `serverless deploy`: dist/ is current
    python -m infra.package functions # `make logs`: the function names, one a line

serverless.yml ships these zips (`package.artifact`) because the framework's own packaging can
neither install Linux wheels for another architecture nor ship bytecode, and Lambda's read-only
code directory would make Python compile every module at every cold start. Each zip holds the
function's code and `shared/`, the locked dependencies of its groups (no boto3: the runtime has
it) as bytecode alone, and the project's code with its sources, so tracebacks show lines.
The architecture is serverless.yml's `provider.architecture`, decided there alone.
`manifest.json` records what each build was made from, so `verify` refuses stale zips.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import os
import py_compile
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infra import PROJECT_ROOT
from infra.serverless_config import Function, Service, read_service
from infra.slim import KEEP_SOURCE, left_out_imports, slim

ARTIFACTS_DIR_VARIABLE = "ARTIFACTS_DIR"
MANIFEST_NAME = "manifest.json"
# psycopg 3.3 ships manylinux_2_28 wheels for aarch64: an older tag falls back to psycopg 3.2.
PLATFORMS = {"arm64": "aarch64-manylinux_2_28", "x86_64": "x86_64-manylinux_2_28"}
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer")
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same input gives the same zip
TASK_ROOT = "/var/task"  # where Lambda unpacks the zip: the file names tracebacks show


class PackageError(Exception):
    """The zips cannot be built or deployed as asked; the message says what to do."""


def _check_architecture(service: Service) -> None:
    if service.architecture not in PLATFORMS:
        raise PackageError(
            f"provider.architecture in serverless.yml must be one of {', '.join(PLATFORMS)} "
            f"written out, not {service.architecture!r}: the build reads it from there"
        )


def artifacts_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the zips go: ARTIFACTS_DIR (relative to the project), else dist/."""
    env = os.environ if environ is None else environ
    return PROJECT_ROOT / (env.get(ARTIFACTS_DIR_VARIABLE) or "dist")


def _run_uv(*args: str, root: Path = PROJECT_ROOT) -> subprocess.CompletedProcess[str]:
    """Run the uv pinned in the dev group (beside this interpreter), else the one on PATH."""
    pinned = Path(sys.executable).parent / "uv"
    uv = str(pinned) if pinned.exists() else "uv"
    return subprocess.run([uv, *args], cwd=root, capture_output=True, text=True)


def _uv(*args: str, root: Path = PROJECT_ROOT) -> str:
    """uv's output; a failure stops the build with uv's own message."""
    done = _run_uv(*args, root=root)
    if done.returncode != 0:
        raise SystemExit(f"uv {args[0]} failed:\n{done.stderr}")
    return done.stdout


def install_dependencies(
    groups: tuple[str, ...], arch: str, python: str, target: Path, root: Path = PROJECT_ROOT
) -> None:
    """Install the locked dependencies of these groups as wheels for Lambda's platform, from
    uv's cache when it has them all."""
    group_args = [arg for group in groups for arg in ("--group", group)]
    requirements = _uv(
        "export", "--frozen", "--no-default-groups", *group_args,
        "--no-hashes", "--no-emit-project", "--no-annotate", "--no-header", root=root,
    )  # fmt: skip
    requirements_file = target.with_suffix(".requirements.txt")
    requirements_file.write_text(requirements)
    install = (
        "pip", "install", "--quiet", "--no-deps", "--only-binary", ":all:",
        "--python-platform", PLATFORMS[arch], "--python-version", python,
        "--target", str(target), "--requirement", str(requirements_file),
    )  # fmt: skip
    # From uv's cache alone when it holds every locked wheel, so a rebuild needs no network;
    # from the index only for what it lacks (a first build, a changed uv.lock).
    if _run_uv(*install, "--offline", root=root).returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        _uv(*install, root=root)
    for name in ("bin", *RUNTIME_PROVIDED):
        shutil.rmtree(target / name, ignore_errors=True)
    (target / ".lock").unlink(missing_ok=True)  # uv's lock on the target folder


def source_files(function: Function, root: Path = PROJECT_ROOT) -> list[Path]:
    """The shared package and this function's package, sources only, relative to `root`."""
    files = [Path("functions", "__init__.py")]
    for package in (Path("shared"), function.code_dir):
        files += [
            path.relative_to(root)
            for path in (root / package).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
        ]
    return sorted(files)


def copy_code(function: Function, target: Path, root: Path = PROJECT_ROOT) -> list[Path]:
    """Copy the function's sources into `target`; return what was copied."""
    files = source_files(function, root)
    for relative in files:
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / relative, target / relative)
    return files


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digest(root: Path, files: list[Path]) -> str:
    """One hash over these files' paths and contents."""
    digest = hashlib.sha256()
    for relative in sorted(files):
        digest.update(f"{relative.as_posix()}\0{_sha256(root / relative)}\n".encode())
    return digest.hexdigest()


def compile_bytecode(target: Path, python: str, *, sourceless: bool = False) -> None:
    """Compile every module with this interpreter, which must be the runtime's version.

    `sourceless`: each top-level package or module of `target` but `KEEP_SOURCE` becomes
    bytecode alone, in the place of its source, named for tracebacks as it sits in Lambda.
    """
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if running != python:
        raise SystemExit(f"compile with Python {python} (the Lambda runtime), not {running}")
    options: dict[str, Any] = {
        "quiet": 2,
        "workers": os.cpu_count() or 1,
        "invalidation_mode": py_compile.PycInvalidationMode.UNCHECKED_HASH,
    }
    compiled = True
    if sourceless:
        kept = "|".join(map(re.escape, KEEP_SOURCE))
        compiled = compileall.compile_dir(
            target,
            ddir=TASK_ROOT,
            legacy=True,
            rx=re.compile(rf"^{re.escape(str(target))}/({kept})(/|\.py$)"),
            **options,
        )
        for source in sorted(target.rglob("*.py")):
            if source.with_suffix(".pyc").is_file():
                source.unlink()
    compiled &= compileall.compile_dir(target, **options)
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


def _inputs(service: Service, architecture: str) -> dict[str, Any]:
    """What every zip of a build depends on besides its own sources."""
    return {
        "service": service.name,
        "architecture": architecture,
        "python_version": service.python_version,
        "uv_lock": _sha256(service.root / "uv.lock"),
        "builder": _sha256(Path(__file__)),
        "slimmer": _sha256(Path(__file__).with_name("slim.py")),
    }


def build(
    dist: Path | None = None, *, service: Service | None = None, architecture: str | None = None
) -> dict[str, Path]:
    """Build every function's zip into `dist` and write the manifest; return the zips.

    `architecture` defaults to serverless.yml's; another one serves the tests and the bench,
    which run the zips on this machine, and `verify` refuses such a build.
    """
    service = service or read_service()
    _check_architecture(service)
    architecture = architecture or service.architecture
    dist = dist or artifacts_dir()
    dist.mkdir(parents=True, exist_ok=True)
    manifest_path = dist / MANIFEST_NAME
    # Until the new manifest is written, dist/ holds no build a deploy would accept.
    manifest_path.unlink(missing_ok=True)
    manifest = _inputs(service, architecture)
    work = dist / ".build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    installed: dict[tuple[str, ...], Path] = {}
    zips: dict[str, Path] = {}
    entries: dict[str, dict[str, Any]] = {}
    for function in service.functions:
        if function.groups not in installed:
            site = work / ("deps-" + "-".join(function.groups or ("core",)))
            install_dependencies(
                function.groups, architecture, service.python_version, site, service.root
            )
            slim(site)
            compile_bytecode(site, service.python_version, sourceless=True)
            installed[function.groups] = site
        staging = work / function.name
        shutil.copytree(installed[function.groups], staging)
        # Hashed as copied, so a file edited during the build makes the build stale.
        copied = copy_code(function, staging, service.root)
        if refused := left_out_imports(staging, copied):
            raise PackageError(
                f"{'; '.join(refused)}: infra/slim.py leaves this out of the zips "
                "(LEFT_OUT_PATHS); delete its line there to ship it"
            )
        sources = tree_digest(staging, copied)
        compile_bytecode(staging / "shared", service.python_version)
        compile_bytecode(staging / "functions", service.python_version)
        zips[function.name] = dist / f"{function.name}.zip"
        write_zip(staging, zips[function.name])
        entries[function.name] = {
            "groups": list(function.groups),
            "sources": sources,
            "zip": zips[function.name].name,
            "zip_sha256": _sha256(zips[function.name]),
        }
    shutil.rmtree(work)
    manifest["functions"] = entries
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return zips


def verify(dist: Path | None = None, *, service: Service | None = None) -> None:
    """Refuse, with one line, zips in `dist` that do not match the working tree.

    Checked: serverless.yml's architecture, Python version and functions, uv.lock, this
    script, each function's dependency groups and sources, and each zip's own hash.
    """
    service = service or read_service()
    _check_architecture(service)
    dist = dist or artifacts_dir()
    shown = dist.relative_to(PROJECT_ROOT) if dist.is_relative_to(PROJECT_ROOT) else dist
    try:
        recorded: dict[str, Any] = json.loads((dist / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        raise PackageError(f"{shown} holds no build: run `make package STAGE=<stage>`") from None
    problems = [
        f"{key} is {recorded.get(key)} in the build, {value} in serverless.yml"
        if key in ("service", "architecture", "python_version")
        else f"{key} changed since the build"
        for key, value in _inputs(service, service.architecture).items()
        if recorded.get(key) != value
    ]
    built: dict[str, dict[str, Any]] = recorded.get("functions", {})
    if sorted(built) != sorted(function.name for function in service.functions):
        problems.append(f"the build has the functions {', '.join(sorted(built))}")
    stale: dict[str, list[str]] = {}
    for function in service.functions:
        if function.name not in built:
            continue
        zip_path = dist / str(built[function.name].get("zip"))
        current = {
            "sources": (
                "sources changed",
                tree_digest(service.root, source_files(function, service.root)),
            ),
            "groups": ("dependency groups changed", list(function.groups)),
            "zip_sha256": (
                "zip missing or altered",
                _sha256(zip_path) if zip_path.is_file() else None,
            ),
        }
        for key, (problem, value) in current.items():
            if built[function.name].get(key) != value:
                stale.setdefault(problem, []).append(function.name)
    problems += [f"{', '.join(functions)}: {problem}" for problem, functions in stale.items()]
    if problems:
        raise PackageError(
            f"refusing the zips in {shown} ({'; '.join(problems)}): "
            "rebuild with `make package STAGE=<stage>`"
        )


def _report(zips: dict[str, Path]) -> None:
    """Print each zip's size, zipped and unzipped."""
    for name, zip_path in zips.items():
        with zipfile.ZipFile(zip_path) as archive:
            unzipped = sum(info.file_size for info in archive.infolist())
        shown = (
            zip_path.relative_to(PROJECT_ROOT)
            if zip_path.is_relative_to(PROJECT_ROOT)
            else zip_path
        )
        sys.stdout.write(
            f"{shown}: {zip_path.stat().st_size / 2**20:.1f} MiB"
            f" zipped, {unzipped / 2**20:.1f} MiB unzipped ({name})\n"
        )


def main(argv: list[str] | None = None) -> int:
    """Build (and report sizes), verify, or list the functions; errors are one line on stderr
    and exit code 1."""
    parser = argparse.ArgumentParser(prog="python -m infra.package", description=__doc__)
    parser.add_argument(
        "command", nargs="?", choices=["build", "verify", "functions"], default="build"
    )
    args = parser.parse_args(argv)
    try:
        service = read_service()
        if args.command == "functions":
            sys.stdout.writelines(f"{function.name}\n" for function in service.functions)
        elif args.command == "verify":
            verify(service=service)
            sys.stdout.write(f"{artifacts_dir().name}/ matches the working tree\n")
        else:
            _report(build(service=service))
    except PackageError as error:
        sys.stderr.write(f"package: {error}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
