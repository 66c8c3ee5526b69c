"""Run the benchmark: `python -m bench` (or `make bench`); `--quick` for a smoke run."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.burst import run_burst
from bench.coldstart import build_with_sources, measure_cold_starts
from bench.contenders import (
    NaiveFastAPI,
    ProjectFunctions,
    ProjectFunctionsWithoutMetrics,
    RawPsycopg,
)
from bench.exchanges import measure_exchanges
from bench.ladder import LADDERS, measure_ladders
from bench.report import build_report, keep_setting_exists
from bench.sizes import measure_zip
from bench.stack import BENCH_USER, POOL_SIZE, RESULTS_DIR, bench_stack, seed_items
from bench.stats import summarize
from bench.warm import measure_threads_per_request, measure_warm
from infra import PROJECT_ROOT
from infra.package import PLATFORMS, build
from tests.fixtures.tokens import serve_tokens

SEEDED_ITEMS = 50


def _setting(name: str, default: int, quick: int, *, is_quick: bool) -> int:
    return int(os.environ.get(name, quick if is_quick else default))


def _progress(message: str) -> None:
    sys.stderr.write(f"bench: {message}\n")
    sys.stderr.flush()


def _context() -> dict[str, str]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit or "unknown",
        "python": platform.python_version(),
        "cpus": str(os.cpu_count()),
        "load average at start": " ".join(f"{load:.2f}" for load in os.getloadavg()),
        "pooler": f"PgBouncer, transaction mode, SCRAM over TLS (verify-full), {POOL_SIZE} server "
        "connections",
    }


def _summaries(samples: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, Any]]:
    return {
        outer: {inner: dataclasses.asdict(summarize(values)) for inner, values in by.items()}
        for outer, by in samples.items()
    }


def _as_dicts(figures: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        outer: {inner: dataclasses.asdict(value) for inner, value in by.items()}
        for outer, by in figures.items()
    }


@contextmanager
def _stdout_to(path: Path) -> Iterator[None]:
    """Send file descriptor 1 (the functions' JSON logs) to a file, as Lambda sends it away."""
    sys.stdout.flush()
    saved = os.dup(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as log:
        os.dup2(log.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def main(argv: list[str] | None = None) -> int:
    """Measure everything, write the report and JSON, print the report."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few rounds: check that it runs")
    quick = parser.parse_args(argv).quick
    rounds = _setting("BENCH_ROUNDS", 300, 10, is_quick=quick)
    cold_rounds = _setting("BENCH_COLD_ROUNDS", 10, 1, is_quick=quick)
    processes = _setting("BENCH_BURST_PROCESSES", 4, 2, is_quick=quick)
    threads = _setting("BENCH_BURST_THREADS", 80, 10, is_quick=quick)
    started = time.monotonic()
    context = _context()

    _progress(f"building the zips ({', '.join(sorted(PLATFORMS))})")
    zips = {
        arch: build(RESULTS_DIR / f"dist-{arch}", architecture=arch) for arch in sorted(PLATFORMS)
    }
    sizes = {
        arch: {f: measure_zip(path) for f, path in built.items()} for arch, built in zips.items()
    }
    with_sources = build_with_sources(RESULTS_DIR / "dist-sources", architecture="x86_64")

    with (
        _stdout_to(RESULTS_DIR / "functions.log"),
        bench_stack() as stack,
        serve_tokens() as tokens,
    ):
        read_id = seed_items(stack, SEEDED_ITEMS)[0]
        _progress("counting exchanges through the proxy")
        exchanges = measure_exchanges(
            stack,
            [
                lambda url: ProjectFunctions(read_id, url, tokens, keep_connection=False),
                lambda url: RawPsycopg(read_id, url),
                lambda url: NaiveFastAPI(read_id, url),
            ],
        )
        url = stack.pooler_url()
        project = ProjectFunctions(read_id, url, tokens)
        kept = ProjectFunctions(read_id, url, tokens, keep_connection=True)
        contenders = [
            ProjectFunctions(read_id, url, tokens, keep_connection=False),
            kept,
            ProjectFunctionsWithoutMetrics(read_id, url, tokens),
            RawPsycopg(read_id, url),
            NaiveFastAPI(read_id, url),
        ]
        _progress(f"warm latency: {rounds} interleaved rounds")
        warm = measure_warm(contenders, rounds=rounds, warmup=max(5, rounds // 20))
        thread_counts = measure_threads_per_request(contenders, requests=10)
        _progress("where a warm read spends its time")
        ladders = measure_ladders(project, kept, url, rounds=rounds, warmup=max(5, rounds // 20))
        _progress(f"cold starts: {cold_rounds} rounds")
        cold, import_groups = measure_cold_starts(
            zips["x86_64"],
            with_sources,
            url,
            read_id,
            RESULTS_DIR / "cold",
            rounds=cold_rounds,
            tokens=tokens,
        )
        _progress(f"burst: {processes} processes x {threads} clients")
        auth = (tokens.supabase_url, tokens.token(user_id=BENCH_USER.user_id))
        burst = run_burst(stack, read_id, auth, processes=processes, threads=threads, requests=3)

    context["duration"] = f"{time.monotonic() - started:.0f} s"
    markdown, targets = build_report(
        context=context, warm=warm, threads=thread_counts, exchanges=exchanges, cold=cold,
        sizes=sizes, burst=burst, ladders=ladders, keep_setting_exists=keep_setting_exists(),
        import_groups=import_groups,
    )  # fmt: skip
    results = {
        "context": context,
        "warm_ms": _summaries(warm),
        "threads_per_request": thread_counts,
        "ladders_ms": {
            name: {
                step: dataclasses.asdict(summarize(samples))
                for step, samples in zip(LADDERS[name], by_step, strict=True)
            }
            for name, by_step in ladders.items()
        },
        "exchanges": _as_dicts(exchanges),
        "cold_start_ms": _summaries(cold),
        "import_ms_by_group": _summaries(import_groups),
        "zip_bytes": _as_dicts(sizes),
        "burst": dataclasses.asdict(burst)
        | {"latencies_s": None, "latency_ms": dataclasses.asdict(summarize(burst.latencies_s))},
        "targets": [
            dataclasses.asdict(t) | {"met": t.met, "verdict": t.verdict()} for t in targets
        ],
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "report.md").write_text(markdown + "\n")
    (RESULTS_DIR / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    sys.stdout.write(markdown + "\n")
    _progress(f"wrote {RESULTS_DIR.relative_to(PROJECT_ROOT)}/report.md and results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
