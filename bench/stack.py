"""The benchmark's own Postgres + PgBouncer: transaction mode, SCRAM, 5 server connections.

Ports 55482 / 56593 unless `BENCH_POSTGRES_PORT` / `BENCH_POOLER_PORT` say otherwise, state
under `.local/bench/stack`, so neither `make dev` nor a test run is disturbed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from infra import PROJECT_ROOT
from infra.local_stack import LocalStack, StackConfig, start, stop
from infra.migrate import upgrade
from shared._identity import Identity

__all__ = ["BENCH_USER", "POOL_SIZE", "RESULTS_DIR", "bench_stack", "seed_items"]

RESULTS_DIR = PROJECT_ROOT / ".local" / "bench"
POOL_SIZE = 5
PASSWORD = "bench p@ss:w/rd"
BENCH_USER = Identity(
    "authenticated",
    {
        "sub": "0b3e7c4d-5a6f-4e21-9d8c-7b6a5f4e3d2c",
        "role": "authenticated",
        "aud": "authenticated",
    },
)
"""Whom the items requests act as: the seeded rows are this user's."""


@contextmanager
def bench_stack() -> Iterator[LocalStack]:
    """A fresh, migrated stack for this run, stopped and deleted afterwards."""
    config = StackConfig(
        state_dir=RESULTS_DIR / "stack",
        postgres_port=int(os.environ.get("BENCH_POSTGRES_PORT", "55482")),
        pooler_port=int(os.environ.get("BENCH_POOLER_PORT", "56593")),
        password=PASSWORD,
        default_pool_size=POOL_SIZE,
    )
    stop(config)
    shutil.rmtree(config.state_dir, ignore_errors=True)
    running = start(config)
    try:
        upgrade(running.direct_url())
        yield running
    finally:
        stop(config)
        shutil.rmtree(running.config.state_dir, ignore_errors=True)


def seed_items(stack: LocalStack, count: int) -> list[int]:
    """Insert `count` items of the bench's user for the read routes; their ids."""
    with psycopg.connect(stack.direct_url(), autocommit=True) as conn:
        rows = conn.execute(
            "INSERT INTO items (owner_id, sku, name, quantity)"
            " SELECT %s, 'SEED-' || n, 'Seeded item ' || n, n FROM generate_series(1, %s) AS n"
            " RETURNING id",
            [BENCH_USER.user_id, count],
        ).fetchall()
    return [int(row[0]) for row in rows]
