"""The zips `serverless deploy` would upload, built by the project's own packaging."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.package import build


@pytest.fixture(scope="session")
def zips_x86_64() -> dict[str, Path]:
    """Every function's zip for x86_64, the architecture this machine can run."""
    return build("x86_64")


@pytest.fixture(scope="session")
def zips_arm64() -> dict[str, Path]:
    """Every function's zip for arm64, the default in serverless.yml."""
    return build("arm64")
