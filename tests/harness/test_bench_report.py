"""The bench report's zip size targets: met, or missed by how much; no build, no network."""

from __future__ import annotations

import pytest

from bench.report import MIB, zip_size_target
from bench.sizes import ZipSize


@pytest.mark.parametrize(
    ("function", "zipped_mib", "verdict"),
    [
        ("items", 9.5, "met"),  # FastAPI: 10 MiB
        ("items", 11.25, "missed by 1.25 MiB"),
        ("health", 8, "met"),  # plain: 8 MiB
        ("connections", 10.5, "missed by 2.5 MiB"),
    ],
)
def test_each_zip_is_held_to_its_kinds_target(
    function: str, zipped_mib: float, verdict: str
) -> None:
    target = zip_size_target("arm64", function, ZipSize(int(zipped_mib * MIB), 0, {}))

    assert target.what == f"zip {function} (arm64)"
    assert target.verdict() == verdict
