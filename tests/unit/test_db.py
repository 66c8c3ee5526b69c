"""Engine options, URL handling, mode detection and the pool-size rule; no network."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy.pool import NullPool, QueuePool

from shared._connect import SUPABASE_ROOT_CA
from shared._database_url import detect_mode, to_sqlalchemy_url
from shared._engine import build_engine, pool_size_per_instance
from shared._errors import DatabaseConfigError
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
SUPABASE_ROOT_CA_SHA256 = "807025ad50d4ed219d2c9c7d299c004f824eb00cf7f65afef607d07b72e6cafa"


def make_settings(**overrides: Any) -> Settings:
    return Settings(_env_file=None, **overrides)


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg2"])
def test_url_selects_psycopg_3_and_unescapes_the_password(scheme: str) -> None:
    url = to_sqlalchemy_url(SUPABASE_TRANSACTION.replace("postgres://", f"{scheme}://"))

    assert url.drivername == "postgresql+psycopg"
    assert url.username == f"postgres.{REF}"
    assert url.password == PASSWORD


def test_unparseable_url_error_does_not_echo_the_password() -> None:
    with pytest.raises(DatabaseConfigError) as caught:
        to_sqlalchemy_url(f"not a url {PASSWORD}")

    assert PASSWORD not in str(caught.value)


def test_non_postgres_url_is_refused() -> None:
    with pytest.raises(DatabaseConfigError, match="postgres"):
        to_sqlalchemy_url(f"mysql://root:{ESCAPED}@localhost/db")


@pytest.mark.parametrize(
    ("url", "mode"),
    [
        (SUPABASE_TRANSACTION, ConnectionMode.TRANSACTION),
        (SUPABASE_SESSION, ConnectionMode.SESSION),
        (SUPABASE_DIRECT, ConnectionMode.DIRECT),
        (LOCAL_POOLER, ConnectionMode.TRANSACTION),
        (
            "postgresql://u:p@ep-cool-name-123456-pooler.eu-central-1.aws.neon.tech/db",
            ConnectionMode.TRANSACTION,
        ),
        ("postgresql://u:p@some-host.example:5432/db", ConnectionMode.TRANSACTION),
    ],
)
def test_mode_is_guessed_from_the_url(url: str, mode: ConnectionMode) -> None:
    assert detect_mode(to_sqlalchemy_url(url)) == mode


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


def test_connection_parameters_for_a_remote_pooler() -> None:
    settings = make_settings(db_connect_timeout=4, db_application_name="items")
    params = connect_params(build_engine(SUPABASE_TRANSACTION, settings))

    assert params["connect_timeout"] == 4
    assert params["application_name"] == "items"
    assert params["client_encoding"] == "utf8"
    assert params["sslmode"] == "verify-full"
    assert params["password"] == PASSWORD
    assert params["user"] == f"postgres.{REF}"


@pytest.mark.parametrize("url", [SUPABASE_TRANSACTION, SUPABASE_SESSION, SUPABASE_DIRECT])
def test_supabase_hosts_are_verified_against_supabase_root_ca(url: str) -> None:
    params = connect_params(build_engine(url, make_settings()))

    assert params["sslmode"] == "verify-full"
    assert params["sslrootcert"] == str(SUPABASE_ROOT_CA)


def test_the_shipped_supabase_root_ca_is_that_ca() -> None:
    ca = x509.load_pem_x509_certificate(SUPABASE_ROOT_CA.read_bytes())

    assert ca.subject.rfc4514_string().startswith("CN=Supabase Root 2021 CA,O=Supabase Inc")
    assert ca.issuer == ca.subject
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # The fingerprint other projects pinned, from Supabase's published prod-ca-2021.crt.
    assert ca.fingerprint(hashes.SHA256()).hex() == SUPABASE_ROOT_CA_SHA256


def test_other_remote_hosts_are_encrypted_without_a_ca_to_verify_against() -> None:
    neon = f"postgresql://app:{ESCAPED}@ep-cool-1-pooler.eu-central-1.aws.neon.tech/app"
    params = connect_params(build_engine(neon, make_settings()))

    assert params["sslmode"] == "require"
    assert "sslrootcert" not in params


def test_loopback_uses_tls_when_the_server_offers_it() -> None:
    assert connect_params(build_engine(LOCAL_POOLER, make_settings()))["sslmode"] == "prefer"


def test_sslmode_setting_require_drops_supabase_root_ca() -> None:
    # With a CA file, libpq's `require` verifies the chain: the escape hatch would not open.
    params = connect_params(build_engine(SUPABASE_TRANSACTION, make_settings(db_sslmode="require")))

    assert params["sslmode"] == "require"
    assert "sslrootcert" not in params


def test_sslmode_in_the_url_wins() -> None:
    engine = build_engine(f"{SUPABASE_TRANSACTION}?sslmode=require", make_settings())
    params = connect_params(engine)

    assert params["sslmode"] == "require"
    assert "sslrootcert" not in params


def test_sslmode_and_root_certificate_settings() -> None:
    settings = make_settings(db_sslmode="verify-full", db_sslrootcert="/opt/certs/prod-ca.crt")
    params = connect_params(build_engine(SUPABASE_TRANSACTION, settings))

    assert params["sslmode"] == "verify-full"
    assert params["sslrootcert"] == "/opt/certs/prod-ca.crt"


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
