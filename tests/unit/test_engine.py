"""Engine options per connection mode and the pool-size rule; no network.

How one connection opens (TLS, timeouts): test_connect.py; URLs and modes: test_database_url.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.pool import NullPool, QueuePool

from shared._engine import build_engine, pool_size_per_instance
from shared._settings import ConnectionMode, Settings
from tests.fixtures.engines import connect_params

REF = "abcdefghijklmnopqrst"
PASSWORD = "p@ss:w/rd"
ESCAPED = "p%40ss%3Aw%2Frd"
SUPABASE_TRANSACTION = (
    f"postgres://postgres.{REF}:{ESCAPED}@aws-0-eu-central-1.pooler.supabase.com:6543/postgres"
)
SUPABASE_SESSION = SUPABASE_TRANSACTION.replace(":6543/", ":5432/")
SUPABASE_DIRECT = f"postgresql://postgres:{ESCAPED}@db.{REF}.supabase.co:5432/postgres"
LOCAL_POOLER = f"postgresql://postgres:{ESCAPED}@127.0.0.1:6543/postgres"


def make_settings(**overrides: Any) -> Settings:
    return Settings(_env_file=None, **overrides)


def test_transaction_mode_uses_nullpool_and_never_prepares() -> None:
    engine = build_engine(SUPABASE_TRANSACTION, make_settings())
    params = connect_params(engine)

    assert isinstance(engine.pool, NullPool)
    assert params["prepare_threshold"] is None


def test_a_kept_connection_is_a_pool_of_one_that_never_waits_nor_prepares() -> None:
    engine = build_engine(SUPABASE_TRANSACTION, make_settings(db_keep_connection=True))
    params = connect_params(engine)

    assert isinstance(engine.pool, QueuePool)
    assert engine.pool.size() == 1
    assert engine.pool._max_overflow == -1  # a second connection at once is opened, not awaited
    assert not engine.pool._pre_ping  # staleness is checked without a round trip
    assert params["prepare_threshold"] is None


def test_keeping_the_connection_is_off_by_default_and_only_for_transaction_mode() -> None:
    settings = make_settings(db_keep_connection=True)
    session = build_engine(SUPABASE_SESSION, settings)

    assert make_settings().db_keep_connection is False
    assert isinstance(session.pool, QueuePool)
    assert session.pool.size() == pool_size_per_instance(60, 1, uses_data_api=True)
    assert session.pool._pre_ping  # the session-mode pool, unchanged


def test_url_query_cannot_turn_prepared_statements_back_on() -> None:
    engine = build_engine(f"{LOCAL_POOLER}?prepare_threshold=5", make_settings())

    assert connect_params(engine)["prepare_threshold"] is None


def test_explicit_mode_setting_wins_over_the_guess() -> None:
    engine = build_engine(SUPABASE_TRANSACTION, make_settings(), ConnectionMode.SESSION)

    assert isinstance(engine.pool, QueuePool)
    assert "prepare_threshold" not in connect_params(engine)


def test_session_mode_pool_follows_the_connection_budget() -> None:
    settings = make_settings(db_max_connections=90, db_instances=3, db_uses_data_api=False)
    engine = build_engine(SUPABASE_SESSION, settings)

    assert isinstance(engine.pool, QueuePool)
    assert engine.pool.size() == 90 * 80 // 100 // 3
    assert engine.pool._pre_ping


def test_explicit_pool_size_wins() -> None:
    engine = build_engine(SUPABASE_DIRECT, make_settings(db_pool_size=7, db_max_overflow=2))

    assert isinstance(engine.pool, QueuePool)
    assert engine.pool.size() == 7
    assert engine.pool._max_overflow == 2


@pytest.mark.parametrize(
    ("max_connections", "instances", "uses_data_api", "expected"),
    [
        (60, 1, True, 24),  # Supabase Micro, Data API in use: 40%
        (60, 1, False, 48),  # 80% without it
        (120, 4, True, 12),
        (90, 7, False, 10),  # 72 // 7, rounded down: never over budget
        (10, 20, True, 1),  # at least one connection
    ],
)
def test_pool_size_per_instance(
    max_connections: int, instances: int, uses_data_api: bool, expected: int
) -> None:
    assert pool_size_per_instance(max_connections, instances, uses_data_api=uses_data_api) == (
        expected
    )
