"""Local certificate authority and server certificate for the sandbox's HTTPS listener.

Why: MSAL, azure-identity and Dataverse clients accept only https authorities and base URLs, and
nobody should switch certificate verification off to talk to a sandbox. On first start we make a
small CA (10 years) and a server certificate signed by it for ``localhost`` / ``127.0.0.1`` / ``::1``;
later starts reuse them. Clients trust ``ca.pem`` (pass ``verify=ca_file`` per request: this
machine exports REQUESTS_CA_BUNDLE, which overrides a requests.Session's ``verify``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
SERVER_CERT_FILE = "server.pem"
SERVER_KEY_FILE = "server-key.pem"

_CA_DAYS = 3650
_SERVER_DAYS = 825
_RENEW_BEFORE = dt.timedelta(days=30)
_DNS_NAMES = ("localhost",)
_IP_NAMES = ("127.0.0.1", "::1")


def _write(path: Path, data: bytes, private: bool = False) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    if private:
        os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _make_ca(state_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Dynamics Sync Sandbox"),
        x509.NameAttribute(NameOID.COMMON_NAME, "Dynamics Sync Sandbox Local CA"),
    ])
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(state_dir / CA_KEY_FILE, _key_pem(key), private=True)
    _write(state_dir / CA_FILE, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _make_server(state_dir: Path, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    san = x509.SubjectAlternativeName(
        [x509.DNSName(n) for n in _DNS_NAMES] + [x509.IPAddress(ipaddress.ip_address(i)) for i in _IP_NAMES]
    )
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=_SERVER_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=True, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(san, critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(state_dir / SERVER_KEY_FILE, _key_pem(key), private=True)
    _write(state_dir / SERVER_CERT_FILE, cert.public_bytes(serialization.Encoding.PEM))


def _server_cert_usable(cert: x509.Certificate | None, ca_cert: x509.Certificate) -> bool:
    if cert is None or cert.issuer != ca_cert.subject:
        return False
    if cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < _RENEW_BEFORE:
        return False
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def ensure_tls(state_dir: Path) -> tuple[Path, Path, Path]:
    """Create (or reuse) the CA and server certificate; return (ca.pem, server cert, server key)."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    ca_path, ca_key_path = state_dir / CA_FILE, state_dir / CA_KEY_FILE
    cert_path, key_path = state_dir / SERVER_CERT_FILE, state_dir / SERVER_KEY_FILE

    ca_cert = _load_cert(ca_path)
    ca_key = None
    if ca_cert is not None and ca_key_path.exists():
        loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        ca_key = loaded if isinstance(loaded, ec.EllipticCurvePrivateKey) else None
    if ca_cert is None or ca_key is None or ca_cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < _RENEW_BEFORE:
        ca_cert, ca_key = _make_ca(state_dir)
        _make_server(state_dir, ca_cert, ca_key)
    elif not key_path.exists() or not _server_cert_usable(_load_cert(cert_path), ca_cert):
        _make_server(state_dir, ca_cert, ca_key)
    return ca_path.resolve(), cert_path.resolve(), key_path.resolve()
