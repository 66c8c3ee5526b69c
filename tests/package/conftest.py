"""The zips `serverless deploy` would upload, built by the project's own packaging.

Always into temporary folders: a test build must never be what a later deploy picks up.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.package import PLATFORMS, build
from infra.serverless_config import read_service
from tests.fixtures.service import FUNCTIONS


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


@pytest.fixture(params=sorted(PLATFORMS))
def arch(request: pytest.FixtureRequest) -> str:
    """Each architecture the build knows."""
    return str(request.param)


@pytest.fixture(params=list(FUNCTIONS))
def function(request: pytest.FixtureRequest) -> str:
    """Each function of serverless.yml."""
    return str(request.param)


@pytest.fixture
def zip_path(request: pytest.FixtureRequest, arch: str, function: str) -> Path:
    """The function's zip, built for the architecture."""
    zips: dict[str, Path] = request.getfixturevalue(f"zips_{arch}")
    return zips[function]
