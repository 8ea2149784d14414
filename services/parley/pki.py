"""A small certificate authority for development and tests (``python -m parley.pki DIR``).

The local stack (``make run``) makes one under ``.state/pki`` on first start:

- ``ca.crt`` / ``ca.key``: the CA every other certificate is signed by; the
  CLI trusts ``ca.crt`` by default in development.
- ``edge.crt`` / ``edge.key``: the gateway's public certificate (gRPC port and
  WebSocket bridge), valid for ``localhost``, ``127.0.0.1`` and ``::1``.
- ``<service>.crt`` / ``<service>.key`` for gateway, router, presence and
  history: each service's identity for internal calls (mutual TLS). The
  certificate's common name and DNS name are the service name; a server
  checks its caller's name against the services allowed to call it, and a
  client checks that the server it reached is the service it meant to call.
- ``probe.crt`` / ``probe.key``: a certificate of the CA that no service
  admits as a caller: enough for health checks and reflection on the
  internal ports (the devstack's readiness checks, grpcurl).

Production uses its own CA (cert-manager, a Vault PKI...) with the same
names; this module only exists so that development is TLS end to end too.
Keys are EC P-256; files are written to a temporary directory and renamed
into place, so concurrent first starts end with one complete set.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import ipaddress
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The internal services, each with a certificate of its own name.
SERVICES = ("gateway", "router", "presence", "history")
# A certificate no service accepts as a caller: health checks and grpcurl on internal ports.
PROBE = "probe"
EDGE = "edge"
EDGE_NAMES = ("localhost", "127.0.0.1", "::1")
VALIDITY = dt.timedelta(days=825)


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_ca(common_name: str = "Parley development CA", validity: dt.timedelta = VALIDITY) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue(
    ca: Issued,
    common_name: str,
    names: Sequence[str],
    *,
    validity: dt.timedelta = VALIDITY,
    not_before: dt.datetime | None = None,
) -> Issued:
    """A leaf certificate for both server and client use, with ``names`` as DNS/IP SANs."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for entry in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(entry)))
        except ValueError:
            sans.append(x509.DNSName(entry))
    start = not_before or _now() - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def write_pair(directory: Path, stem: str, issued: Issued) -> None:
    (directory / f"{stem}.crt").write_bytes(issued.cert_pem)
    key_path = directory / f"{stem}.key"
    key_path.write_bytes(issued.key_pem)
    key_path.chmod(0o600)


def complete(directory: Path) -> bool:
    stems = ["ca", EDGE, PROBE, *SERVICES]
    return all((directory / f"{s}.crt").is_file() and (directory / f"{s}.key").is_file() for s in stems)


def ensure_dev_pki(directory: Path) -> Path:
    """Creates the development CA and certificates in ``directory`` unless they exist; returns it."""
    if complete(directory):
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".pki-", dir=directory.parent))
    try:
        ca = make_ca()
        write_pair(scratch, "ca", ca)
        write_pair(scratch, EDGE, issue(ca, "parley-gateway", EDGE_NAMES))
        for service in (*SERVICES, PROBE):
            write_pair(scratch, service, issue(ca, service, [service]))
        scratch.chmod(0o755)
        try:
            os.rename(scratch, directory)
        except OSError:
            # Another process won the race (or an incomplete directory is in the way).
            if not complete(directory):
                shutil.rmtree(directory, ignore_errors=True)
                os.rename(scratch, directory)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(scratch)
    return directory


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m parley.pki", description="Create a development CA and Parley's certificates."
    )
    parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    ensure_dev_pki(args.directory)
    print(args.directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
