"""The local stack's CA and server certificate: what a verify-full client accepts, and when the
files are made again; no servers are started."""

from __future__ import annotations

import datetime
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509 import DNSName, IPAddress
from cryptography.x509.verification import PolicyBuilder, Store

from infra.local_stack import StackConfig
from infra.local_stack.certs import RENEW_BEFORE, TlsFiles, ensure_certificates
from infra.local_stack.pgbouncer import pgbouncer_ini
from tests.unit.test_local_stack import settings_of


def verify_server(files: TlsFiles, subject: DNSName | IPAddress) -> None:
    """Verify the server certificate for `subject` the way a verify-full client does."""
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    verifier = PolicyBuilder().store(Store([ca])).build_server_verifier(subject)
    verifier.verify(server, [])


def test_server_certificate_is_valid_for_the_stack_host_names(tmp_path: Path) -> None:
    files, made = ensure_certificates(tmp_path, None)

    assert made
    verify_server(files, DNSName("localhost"))
    verify_server(files, IPAddress(ipaddress.ip_address("127.0.0.1")))


def test_server_certificate_is_refused_for_another_host_name(tmp_path: Path) -> None:
    files, _ = ensure_certificates(tmp_path, None)

    with pytest.raises(x509.verification.VerificationError):
        verify_server(files, DNSName("db.example.com"))


def test_files_are_readable_by_their_owner_alone(tmp_path: Path) -> None:
    files, _ = ensure_certificates(tmp_path, None)

    assert [stat.S_IMODE(path.stat().st_mode) for path in files] == [0o600] * 3


def test_certificates_are_kept_while_valid(tmp_path: Path) -> None:
    files, _ = ensure_certificates(tmp_path, None)
    before = [path.read_bytes() for path in files]

    again, made = ensure_certificates(tmp_path, None)

    assert not made
    assert [path.read_bytes() for path in again] == before


@pytest.mark.parametrize("damage", ["missing key", "foreign key", "not a certificate"])
def test_certificates_are_made_again_when_a_file_is_unusable(tmp_path: Path, damage: str) -> None:
    files, _ = ensure_certificates(tmp_path, None)
    if damage == "missing key":
        files.server_key.unlink()
    elif damage == "foreign key":
        foreign = ec.generate_private_key(ec.SECP256R1())
        files.server_key.write_bytes(
            foreign.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        )
    else:
        files.ca_cert.write_text("not a certificate")

    _, made = ensure_certificates(tmp_path, None)

    assert made
    verify_server(files, DNSName("localhost"))


def test_certificates_close_to_expiry_are_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files, _ = ensure_certificates(tmp_path, None)
    expires = x509.load_pem_x509_certificate(files.server_cert.read_bytes()).not_valid_after_utc
    later = expires - RENEW_BEFORE + datetime.timedelta(minutes=1)

    class Later(datetime.datetime):
        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> Later:
            return cls.fromtimestamp(later.timestamp(), tz)

    monkeypatch.setattr(datetime, "datetime", Later)
    _, made = ensure_certificates(tmp_path, None)

    assert made


def test_pgbouncer_requires_tls_of_clients_with_the_stack_certificate() -> None:
    config = StackConfig(state_dir=Path("/state"))

    settings = settings_of(pgbouncer_ini(config, (1, 18, 0)))

    assert settings["client_tls_sslmode"] == "require"
    assert settings["client_tls_cert_file"] == "/state/server.pem"
    assert settings["client_tls_key_file"] == "/state/server.key"
