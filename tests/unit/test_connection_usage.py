"""The connection report's arithmetic; no network."""

from __future__ import annotations

from shared._connection_usage import ConnectionUsage, build_report


def test_report_totals_and_budgets() -> None:
    rows = [
        {"application_name": "items", "state": "idle", "connections": 30},
        {"application_name": "health", "state": "active", "connections": 12},
    ]

    report = build_report(100, rows)

    assert report["in_use"] == 42
    assert report["in_use_percent"] == 42.0
    assert report["guidance"]["with_data_api"] == {
        "limit_percent": 40,
        "limit_connections": 40,
        "within_limit": False,
    }
    assert report["guidance"]["without_data_api"] == {
        "limit_percent": 80,
        "limit_connections": 80,
        "within_limit": True,
    }
    assert report["by_application"] == rows


def test_empty_usage() -> None:
    report = build_report(60, [])

    assert report["in_use"] == 0
    assert report["guidance"]["with_data_api"]["limit_connections"] == 24


def test_usage_by_state_names_the_metrics_states_zeros_included() -> None:
    usage = ConnectionUsage(
        60,
        [
            {"application_name": "items", "state": "idle", "connections": 3},
            {"application_name": "items", "state": "idle in transaction", "connections": 2},
            {
                "application_name": "bench",
                "state": "idle in transaction (aborted)",
                "connections": 1,
            },
            {"application_name": "(unnamed)", "state": "(hidden)", "connections": 4},
        ],
    )

    assert usage.total == 10
    assert usage.by_state() == {"active": 0, "idle": 3, "idle_in_transaction": 3, "other": 4}
