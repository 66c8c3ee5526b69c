"""The metric catalog: what CloudWatch accepts, and totals that are coarser views of a metric."""

from __future__ import annotations

import pytest

from shared._metrics import CATALOG, MetricSpec

# The units CloudWatch's embedded metric format accepts that these metrics could use.
UNITS = frozenset({"Count", "Milliseconds", "Percent"})


@pytest.mark.parametrize(("name", "spec"), sorted(CATALOG.items()))
def test_each_metric_has_a_cloudwatch_unit_and_at_most_nine_dimensions(
    name: str, spec: MetricSpec
) -> None:
    assert spec.unit in UNITS, name
    # EMF allows 30 dimensions per set; CloudWatch alarms and SEARCH stay readable well below.
    assert all(len(dimensions) + 1 <= 9 for dimensions in spec.dimension_sets), name


@pytest.mark.parametrize(("name", "spec"), sorted(CATALOG.items()))
def test_each_total_drops_dimensions_and_adds_none(name: str, spec: MetricSpec) -> None:
    for aggregate in spec.aggregates:
        assert set(aggregate) < set(spec.dimensions), name
