"""Medians, p95 and ratios of timing samples."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

__all__ = ["Ratio", "Summary", "ratio", "summarize"]


@dataclass(frozen=True)
class Summary:
    """Milliseconds over `count` samples."""

    median_ms: float
    p95_ms: float
    count: int


@dataclass(frozen=True)
class Ratio:
    """A measurement against its reference, both summarised, and their quotients."""

    subject: Summary
    reference: Summary

    @property
    def median(self) -> float:
        return self.subject.median_ms / self.reference.median_ms

    @property
    def p95(self) -> float:
        return self.subject.p95_ms / self.reference.p95_ms


def summarize(seconds: list[float]) -> Summary:
    """Median and 95th percentile (inclusive method: fine for a few samples too)."""
    if not seconds:
        raise ValueError("no samples")
    millis = sorted(s * 1000 for s in seconds)
    p95 = (
        statistics.quantiles(millis, n=20, method="inclusive")[18] if len(millis) > 1 else millis[0]
    )
    return Summary(median_ms=statistics.median(millis), p95_ms=p95, count=len(millis))


def ratio(subject: list[float], reference: list[float]) -> Ratio:
    """`subject` over `reference`, both summarised."""
    return Ratio(summarize(subject), summarize(reference))
