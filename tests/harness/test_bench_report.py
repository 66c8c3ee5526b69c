"""The bench report's targets: met, or missed by how much; no build, no network."""

from __future__ import annotations

import pytest

from bench.contenders import ROUTES
from bench.report import (
    KEPT,
    METRICS_OFF,
    MIB,
    PROJECT,
    RAW,
    keep_connection_comparison,
    metrics_cost_rows,
    zip_size_target,
)
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


def test_each_mode_of_db_keep_connection_is_held_to_its_own_targets() -> None:
    raw_ms = 4.0
    by_mode_ms = {PROJECT: 6.0, KEPT: 1.0}  # 1.5x and 0.25x the raw connect per request
    warm = {name: dict.fromkeys(ROUTES, [ms / 1000] * 3) for name, ms in by_mode_ms.items()}
    warm[RAW] = dict.fromkeys(ROUTES, [raw_ms / 1000] * 3)

    _, targets = keep_connection_comparison(warm)

    assert {t.what: t.verdict() for t in targets} == {
        "warm health, DB_KEEP_CONNECTION off, vs raw psycopg": "missed by 27%",  # 1.18x
        "warm items get, DB_KEEP_CONNECTION off, vs raw psycopg": "met",  # 1.66x
        "warm health, DB_KEEP_CONNECTION on, vs raw psycopg": "missed by 67%",  # 0.15x
        "warm items get, DB_KEEP_CONNECTION on, vs raw psycopg": "met",  # 0.35x
        "warm items create, DB_KEEP_CONNECTION on, vs raw psycopg": "met",  # 0.45x
    }


def test_the_metrics_cost_is_the_project_with_metrics_over_the_project_without() -> None:
    warm = {
        PROJECT: dict.fromkeys(ROUTES, [0.0055] * 3),
        METRICS_OFF: dict.fromkeys(ROUTES, [0.005] * 3),
    }

    rows = metrics_cost_rows(warm)

    assert [row[0] for row in rows] == list(ROUTES)
    assert {row[3] for row in rows} == {"1.10x (p95 1.10x)"}
