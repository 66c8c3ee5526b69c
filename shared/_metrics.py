"""The metrics the functions publish: name, unit and dimensions, the one list the stack's alarms
are checked against (tests/package/test_monitoring_template.py).

Every metric also carries `service`. A CloudWatch alarm must name a metric's exact dimension
set, and no alarm can add up the per-route series, so the totals alarms watch are published as
well, as further dimension sets of the same value (`aggregates`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricSpec:
    """A metric's unit, its dimensions (besides `service`) and the coarser sets it is also under."""

    unit: str
    dimensions: tuple[str, ...]
    aggregates: tuple[tuple[str, ...], ...] = ()

    @property
    def dimension_sets(self) -> tuple[tuple[str, ...], ...]:
        """Every dimension set the metric is published under, `service` left out."""
        return (self.dimensions, *self.aggregates)


CATALOG: dict[str, MetricSpec] = {
    "Requests": MetricSpec(
        "Count", ("function", "route", "status_class"), aggregates=(("function", "status_class"),)
    ),
    "Latency": MetricSpec("Milliseconds", ("function", "route")),
    "ColdStart": MetricSpec("Count", ("function",)),
    "DatabaseConnects": MetricSpec("Count", ("function", "connection")),
    "DatabaseConnectTime": MetricSpec("Milliseconds", ("function",)),
    "ServiceUnavailable": MetricSpec("Count", ("function", "cause"), aggregates=(("cause",),)),
    "TokenRefused": MetricSpec("Count", ("function", "reason")),
    "DatabaseConnections": MetricSpec("Count", ("state",)),
    "DatabaseConnectionsTotal": MetricSpec("Count", ()),
    "DatabaseMaxConnections": MetricSpec("Count", ()),
    "ConnectionBudgetUsed": MetricSpec("Percent", ()),
    "PoolerClients": MetricSpec("Count", ()),
}
