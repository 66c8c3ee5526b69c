"""A burst: hundreds of concurrent clients through a pool of 5 server connections.

Client processes (spawned fresh, so nothing is inherited from the benchmark's threads) each
run many threads; every thread invokes the real items handler (`GET /items/{id}`) a few
times, all released at one instant. Meanwhile the server backends are sampled from
`pg_stat_activity` and PgBouncer's `SHOW POOLS`. Everything is bounded: clients, requests,
and a deadline after which unfinished requests count as failures.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import psycopg

from infra.local_stack import LocalStack

__all__ = ["BurstResult", "run_burst"]

DEADLINE_S = 120.0
SAMPLE_EVERY_S = 0.01


@dataclass(frozen=True)
class BurstResult:
    """What the burst achieved and the most server connections it ever used."""

    clients: int
    requests: int
    statuses: dict[str, int]
    latencies_s: list[float]
    wall_s: float
    peak_backends: int
    peak_pool_servers: int
    peak_waiting_clients: int


@dataclass(frozen=True)
class _Peaks:
    backends: int = 0
    pool_servers: int = 0
    waiting_clients: int = 0


def _client_process(
    database_url: str,
    auth: tuple[str, str],
    threads: int,
    requests: int,
    read_id: int,
    start_at: float,
) -> list[tuple[str, float]]:
    """Run in a fresh process: `threads` clients, `requests` GETs each, from `start_at`, with
    `auth`'s token (the Supabase URL whose JWKS verifies it, and the bench user's token)."""
    supabase_url, token = auth
    os.environ |= {
        "DATABASE_URL": database_url,
        "SUPABASE_URL": supabase_url,
        "DB_APPLICATION_NAME": "bench-burst",
        "POWERTOOLS_SERVICE_NAME": "bench",
        "POWERTOOLS_LOG_LEVEL": "ERROR",
    }
    from functions.items.handler import handler
    from tests.fixtures.lambda_events import LambdaTestContext, http_event

    # A Lambda instance serves its first request alone, on its one event loop: the engine's
    # first connection runs the dialect's one-time set-up under a lock bound to that loop.
    # Made here first, as an instance would have; threads that raced for it on loops of their
    # own would fail on that lock, which no deployed process can meet.
    first = handler(
        http_event("GET /items/{item_id}", path=f"/items/{read_id}", token=token),
        LambdaTestContext(),
    )
    if first["statusCode"] != 200:
        raise RuntimeError(f"the burst's first request answered {first['statusCode']}")

    outcomes: list[tuple[str, float]] = []
    gate = threading.Barrier(threads + 1)

    def client() -> None:
        # Mangum runs on the thread's event loop; Lambda's one thread has one, these need theirs.
        asyncio.set_event_loop(asyncio.new_event_loop())
        events = [
            http_event("GET /items/{item_id}", path=f"/items/{read_id}", token=token)
            for _ in range(requests)
        ]
        gate.wait()
        for event in events:
            started = time.perf_counter()
            try:
                status = str(handler(event, LambdaTestContext())["statusCode"])
            except Exception as exc:  # a crash is an outcome to count, not to stop on
                status = type(exc).__name__
            outcomes.append((status, time.perf_counter() - started))

    workers = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    time.sleep(max(0.0, start_at - time.time()))
    gate.wait()
    deadline = time.monotonic() + DEADLINE_S
    for worker in workers:
        worker.join(timeout=max(0.0, deadline - time.monotonic()))
    unfinished = threads * requests - len(outcomes)
    return outcomes + [("unfinished", DEADLINE_S)] * unfinished


def _sample(stack: LocalStack, stop: threading.Event, peaks: list[_Peaks]) -> None:
    """Poll the servers' view until `stop`; keep the peaks."""
    peak = _Peaks()
    with (
        psycopg.connect(stack.direct_url(), autocommit=True) as postgres,
        psycopg.connect(
            stack.admin_url(), autocommit=True, cursor_factory=psycopg.ClientCursor
        ) as admin,
    ):
        while not stop.is_set():
            row = postgres.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ).fetchone()
            backends = int(row[0]) if row else 0
            cursor = admin.execute("SHOW POOLS")
            names = [column.name for column in cursor.description or []]
            servers = waiting = 0
            for values in cursor.fetchall():
                pool = dict(zip(names, values, strict=True))
                if pool["database"] == stack.config.database:
                    servers += sum(int(pool[k]) for k in names if k.startswith("sv_"))
                    waiting += int(pool["cl_waiting"])
            peak = _Peaks(
                max(peak.backends, backends),
                max(peak.pool_servers, servers),
                max(peak.waiting_clients, waiting),
            )
            time.sleep(SAMPLE_EVERY_S)
    peaks.append(peak)


def run_burst(
    stack: LocalStack,
    read_id: int,
    auth: tuple[str, str],
    processes: int,
    threads: int,
    requests: int,
) -> BurstResult:
    """`processes` x `threads` clients, `requests` each, released together."""
    stop = threading.Event()
    peaks: list[_Peaks] = []
    sampler = threading.Thread(target=_sample, args=(stack, stop, peaks), daemon=True)
    sampler.start()
    start_at = time.time() + 5.0 + processes  # time to spawn and import everywhere
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=processes, mp_context=spawn) as pool:
        futures = [
            pool.submit(
                _client_process, stack.pooler_url(), auth, threads, requests, read_id, start_at
            )
            for _ in range(processes)
        ]
        outcomes = [outcome for future in futures for outcome in future.result()]
    wall = time.time() - start_at
    stop.set()
    sampler.join(timeout=10)
    peak = peaks[0] if peaks else _Peaks()
    return BurstResult(
        clients=processes * threads,
        requests=len(outcomes),
        statuses=dict(Counter(status for status, _ in outcomes)),
        latencies_s=[elapsed for _, elapsed in outcomes],
        wall_s=wall,
        peak_backends=peak.backends,
        peak_pool_servers=peak.pool_servers,
        peak_waiting_clients=peak.waiting_clients,
    )
