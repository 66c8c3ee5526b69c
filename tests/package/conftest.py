"""The zips `serverless deploy` would upload, built by the project's own packaging.

Always into temporary folders: a test build must never be what a later deploy picks up.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.package import build, read_service


@pytest.fixture(scope="session")
def zips_x86_64(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every function's zip for x86_64, the architecture this machine can run."""
    return build(tmp_path_factory.mktemp("dist-x86_64"), architecture="x86_64")


@pytest.fixture(scope="session")
def zips_arm64(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every function's zip for arm64."""
    return build(tmp_path_factory.mktemp("dist-arm64"), architecture="arm64")


@pytest.fixture(scope="session")
def deployable(request: pytest.FixtureRequest) -> Path:
    """The folder `make package` leaves: serverless.yml's architecture, zips and manifest."""
    zips: dict[str, Path] = request.getfixturevalue(f"zips_{read_service().architecture}")
    return next(iter(zips.values())).parent
