"""Every test reaches the pooler over verified TLS, as every deployed request does.

The stack's PgBouncer accepts TLS clients only, with a server certificate its own CA signed
for `localhost` and `127.0.0.1`; the URLs the fixtures hand the functions say `verify-full`
with that CA. Whether a connection really is encrypted shows on the client side
(`pgconn.ssl_in_use`): `pg_stat_ssl` would show PgBouncer's own hop to Postgres instead.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from infra.local_stack import LocalStack
from shared._engine import autocommit_connection
from shared._settings import get_settings


def conninfo_option(conn: psycopg.Connection[object], keyword: str) -> str | None:
    """The value libpq connected with, after the URL, settings and defaults were applied."""
    values = {option.keyword: option.val for option in conn.pgconn.info}
    value = values.get(keyword.encode())
    return value.decode() if value is not None else None


def test_the_functions_url_verifies_the_pooler_against_the_stack_ca(database: LocalStack) -> None:
    configured = get_settings().database_url
    assert configured is not None
    query = parse_qs(urlsplit(configured.get_secret_value()).query)

    assert query["sslmode"] == ["verify-full"]
    assert query["sslrootcert"] == [str(database.ca_file)]
    assert Path(query["sslrootcert"][0]).is_file()


def test_the_functions_connect_to_the_pooler_over_verified_tls(database: LocalStack) -> None:
    with autocommit_connection() as conn:
        driver = conn.connection.driver_connection
        assert isinstance(driver, psycopg.Connection)

        assert driver.pgconn.ssl_in_use
        assert conninfo_option(driver, "sslmode") == "verify-full"
        assert conninfo_option(driver, "sslrootcert") == str(database.ca_file)
        assert driver.pgconn.port == str(database.config.pooler_port).encode()


def test_a_client_without_tls_is_refused_by_the_pooler(stack: LocalStack) -> None:
    with (
        pytest.raises(psycopg.OperationalError, match="SSL required"),
        psycopg.connect(stack.pooler_url(), sslmode="disable", connect_timeout=2),
    ):
        pass


def test_a_client_that_merely_prefers_tls_gets_it(stack: LocalStack) -> None:
    with psycopg.connect(stack.pooler_url(), sslmode="prefer", connect_timeout=2) as conn:
        assert conn.pgconn.ssl_in_use
