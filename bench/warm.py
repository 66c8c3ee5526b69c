"""Warm latency per route, and threads started per request, in interleaved rounds.

Each round runs every route once per contender, in an order drawn anew for each round (from a
fixed seed, so runs repeat), so that drift in the machine's load, and what a request leaves to
the next (garbage to collect, a closed client for the pooler to clean up), touch every contender
alike. A rotation would not: it always puts the same contender right after the same other.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from bench.contenders import ROUTES, Contender

__all__ = ["measure_threads_per_request", "measure_warm"]

ORDER_SEED = 18
"""Seeds the contenders' order in each round."""

type Samples = dict[str, dict[str, list[float]]]
"""Seconds per request, by contender name, then route."""


def measure_warm(contenders: list[Contender], rounds: int, warmup: int) -> Samples:
    """Time `rounds` requests per contender and route after `warmup` untimed rounds."""
    samples: Samples = {c.name: {route: [] for route in ROUTES} for c in contenders}
    orders = random.Random(ORDER_SEED)
    for round_number in range(warmup + rounds):
        order = orders.sample(contenders, len(contenders))
        for route in ROUTES:
            for contender in order:
                request = contender.prepare(route)
                started = time.perf_counter()
                request()
                elapsed = time.perf_counter() - started
                if round_number >= warmup:
                    samples[contender.name][route].append(elapsed)
    return samples


@contextmanager
def _counting_thread_starts() -> Iterator[list[int]]:
    """Count `threading.Thread.start` calls, which every worker thread pool goes through."""
    original = threading.Thread.start
    started = [0]

    def counting_start(thread: threading.Thread) -> None:
        started[0] += 1
        original(thread)

    threading.Thread.start = counting_start  # type: ignore[method-assign, assignment]
    try:
        yield started
    finally:
        threading.Thread.start = original  # type: ignore[method-assign]


def measure_threads_per_request(
    contenders: list[Contender], requests: int
) -> dict[str, dict[str, float]]:
    """Threads started per request, by contender and route (0 is the target)."""
    counts = {c.name: dict.fromkeys(ROUTES, 0.0) for c in contenders}
    for _ in range(requests):
        for contender in contenders:
            for route in ROUTES:
                request = contender.prepare(route)
                with _counting_thread_starts() as started:
                    request()
                counts[contender.name][route] += started[0] / requests
    return counts
