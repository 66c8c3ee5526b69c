"""How one connection opens: its parameters, and TLS verified against the right CA; no network."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from shared._connect import SUPABASE_ROOT_CA
from shared._engine import build_engine
from tests.fixtures.engines import connect_params
from tests.unit.test_engine import (
    ESCAPED,
    LOCAL_POOLER,
    PASSWORD,
    REF,
    SUPABASE_DIRECT,
    SUPABASE_SESSION,
    SUPABASE_TRANSACTION,
    make_settings,
)

SUPABASE_ROOT_CA_SHA256 = "807025ad50d4ed219d2c9c7d299c004f824eb00cf7f65afef607d07b72e6cafa"


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
