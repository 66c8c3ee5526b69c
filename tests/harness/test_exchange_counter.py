"""The counting proxy counts what the wire carries: the harness behind "read = 1 exchange".

Expected figures come from the protocol, not from the proxy: a SCRAM login through PgBouncer
is three exchanges (startup, SASL initial response, SASL response) after two for TLS (the
SSLRequest, one TLS 1.3 handshake round trip), an autocommit SELECT one,
a transaction BEGIN + statement + COMMIT three, and a pipeline sends its statements together.
"""

from __future__ import annotations

import psycopg
import pytest

from infra.local_stack import LocalStack
from tests.fixtures.proxy import TLS_EXCHANGES, ExchangeCounter

# The proxy is checked against the real stack's pooler.
pytestmark = pytest.mark.integration

SCRAM_LOGIN_EXCHANGES = 3
LOGIN_EXCHANGES = TLS_EXCHANGES + SCRAM_LOGIN_EXCHANGES
"""A login to the stack's pooler, which accepts TLS only."""


def connect(url: str, *, autocommit: bool) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(url, prepare_threshold=None, autocommit=autocommit)


def test_a_read_in_autocommit_is_one_exchange_after_login(
    database: LocalStack, exchange_counter: ExchangeCounter
) -> None:
    with connect(exchange_counter.url(database.pooler_url()), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)

    [connection] = exchange_counter.settled()
    assert (connection.login, connection.statements) == (LOGIN_EXCHANGES, 1)
    assert connection.tls


def test_a_transaction_is_begin_statement_commit(
    database: LocalStack, exchange_counter: ExchangeCounter
) -> None:
    with connect(exchange_counter.url(database.pooler_url()), autocommit=False) as conn:
        conn.execute("SELECT count(*) FROM items").fetchone()
        conn.commit()

    [connection] = exchange_counter.settled()
    assert (connection.login, connection.statements) == (LOGIN_EXCHANGES, 3)


def test_a_pipeline_sends_its_statements_in_one_exchange(
    database: LocalStack, exchange_counter: ExchangeCounter
) -> None:
    with connect(exchange_counter.url(database.pooler_url()), autocommit=True) as conn:
        with conn.pipeline():
            cursors = [conn.execute("SELECT %s::int", [n]) for n in range(3)]
        assert [cursor.fetchone() for cursor in cursors] == [(0,), (1,), (2,)]

    [connection] = exchange_counter.settled()
    assert connection.statements == 1


def test_each_connection_is_counted_on_its_own(
    database: LocalStack, exchange_counter: ExchangeCounter
) -> None:
    for _ in range(2):
        with connect(exchange_counter.url(database.pooler_url()), autocommit=True) as conn:
            conn.execute("SELECT 1")
    exchange_counter.reset()
    with connect(exchange_counter.url(database.pooler_url()), autocommit=True) as conn:
        conn.execute("SELECT 1")
        conn.execute("SELECT 2")

    connections = exchange_counter.settled()
    assert [(c.login, c.statements, c.closed) for c in connections] == [(LOGIN_EXCHANGES, 2, True)]
