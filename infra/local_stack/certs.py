"""The stack's own certificate authority, so clients reach PgBouncer with `sslmode=verify-full`.

Every deployed request crosses TLS to the pooler; a local stack that spoke plain TCP would test
none of it: not the handshake's cost, not a wrong root certificate, not a host name the server's
certificate does not cover. So the stack makes a CA of its own and a server certificate signed
by it for `localhost` and `127.0.0.1` (subject alternative names, which libpq matches against
the host it dialled), and its URLs name the CA file. The CA's private key signs once and is
thrown away: nothing can later sign another certificate this CA vouches for. All three files
live in the state dir, readable by their owner alone (the server key is a secret; the CA file
needs no secrecy, and the state dir is private anyway). They are made again when one is
missing, unreadable, or within `RENEW_BEFORE` of expiring.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from infra.local_stack.config import CA_FILE
from infra.local_stack.system import User, write_file

__all__ = ["SERVER_NAMES", "TlsFiles", "ensure_certificates", "tls_files"]

logger = logging.getLogger(__name__)

SERVER_NAMES = ("localhost", "127.0.0.1")
"""The host names a client may dial the stack by and still pass `verify-full`."""

VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=30)


class TlsFiles(NamedTuple):
    """Where a stack's CA certificate, server certificate and server key are."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def tls_files(state_dir: Path) -> TlsFiles:
    """The files of the stack in `state_dir`, whether or not they exist yet."""
    return TlsFiles(state_dir / CA_FILE, state_dir / "server.pem", state_dir / "server.key")


def ensure_certificates(state_dir: Path, user: User | None) -> tuple[TlsFiles, bool]:
    """The stack's TLS files, and whether they were made now (a running pooler has old ones)."""
    files = tls_files(state_dir)
    if _usable(files):
        return files, False
    logger.info("making a certificate authority and a server certificate in %s", state_dir)
    ca_pem, cert_pem, key_pem = _issue()
    write_file(files.server_key, key_pem, user)
    write_file(files.server_cert, cert_pem, user)
    write_file(files.ca_cert, ca_pem, user)
    return files, True


def _usable(files: TlsFiles) -> bool:
    """Whether all files exist, parse, belong together and stay valid for `RENEW_BEFORE`."""
    try:
        ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
        key = serialization.load_pem_private_key(files.server_key.read_bytes(), password=None)
    except (OSError, ValueError):
        return False
    horizon = datetime.datetime.now(datetime.UTC) + RENEW_BEFORE
    return (
        cert.issuer == ca.subject
        and key.public_key() == cert.public_key()
        and min(ca.not_valid_after_utc, cert.not_valid_after_utc) > horizon
    )


def _issue() -> tuple[str, str, str]:
    """A new CA and a server certificate it signed: CA PEM, certificate PEM, key PEM."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    server_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "infra.local_stack test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))  # tolerate a little clock skew
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    dns_name, ip_address = SERVER_NAMES
    alt_names = [x509.DNSName(dns_name), x509.IPAddress(ipaddress.ip_address(ip_address))]
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAMES[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = server_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pem = serialization.Encoding.PEM
    return ca.public_bytes(pem).decode(), server.public_bytes(pem).decode(), key_pem.decode()


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    """A CA signs certificates; a server with an EC key signs its handshakes."""
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
