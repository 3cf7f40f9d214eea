"""The Dynamics sandbox as a compose service: ``python -m include.deploy.dynamics_sandbox --host dynamics-sandbox ...``.

Why a wrapper: the sandbox serves HTTPS with a certificate of its own CA for localhost / 127.0.0.1 / ::1
only (include/sandbox/dynamics/tls.py), which is all a sandbox on loopback needs. In compose the workers
reach it as https://dynamics-sandbox:8082, and they verify the certificate against the CA file (nobody
switches verification off), so the server certificate must name the service too. Before the sandbox
starts, this issues a server certificate from the sandbox's own CA (``ca.pem`` / ``ca-key.pem`` in its
state directory) that names every `--tls-name` (default: `--host`) as well as the loopback names; the
sandbox's ensure_tls keeps a valid certificate of its CA, so it serves this one. Then it runs the sandbox's
own command line with the same arguments.

Binding to the service name (not 0.0.0.0) matters as well: the sandbox publishes its URLs (authority,
token endpoint, resource URL in /_sandbox/info and the OpenID configuration) from its --host, and clients
in other containers must be able to reach what it publishes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from include.sandbox.dynamics import tls

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
SERVER_DAYS = 825


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _names_of(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return set(san.get_values_for_type(x509.DNSName)) | {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}


def ensure_server_names(state_dir: Path, names: list[str]) -> bool:
    """Make the sandbox's server certificate name `names` too; True when a new one was issued."""
    ca_path, cert_path, key_path = tls.ensure_tls(state_dir)  # the CA (and a loopback certificate) first
    wanted = [*LOOPBACK_NAMES, *(n for n in names if n not in LOOPBACK_NAMES)]
    current = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if set(wanted) <= _names_of(current):
        return False
    ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
    ca_key = serialization.load_pem_private_key((ca_path.parent / tls.CA_KEY_FILE).read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"unexpected CA key type in {ca_path.parent / tls.CA_KEY_FILE}")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=SERVER_DAYS), ca_cert.not_valid_after_utc))
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
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in wanted]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    tmp_key = key_path.with_suffix(".tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_pem)
    tmp_cert = cert_path.with_suffix(".tmp")
    tmp_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp_key, key_path)
    os.replace(tmp_cert, cert_path)
    return True


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m include.deploy.dynamics_sandbox", add_help=False)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--state-dir", type=Path, default=Path(".sandbox/dynamics"))
    parser.add_argument("--tls-name", action="append", default=[],
                        help="a name the server certificate must carry (repeat; default: --host)")
    ours, rest = parser.parse_known_args(argv)
    names = ours.tls_name or [ours.host]
    if ensure_server_names(ours.state_dir, names):
        print(f"Dynamics sandbox certificate issued for {', '.join(names)} (CA {ours.state_dir / tls.CA_FILE})",
              file=sys.stderr, flush=True)
    from include.sandbox.dynamics.__main__ import main as sandbox_main

    return sandbox_main(["--host", ours.host, "--state-dir", str(ours.state_dir), *rest])


if __name__ == "__main__":
    sys.exit(main())
