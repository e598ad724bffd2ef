"""The box's TLS certificate for the web UI (and DICOM TLS): made on the box, replaceable by the admin.

First boot makes a self-signed certificate (ECDSA P-256, valid 10 years) for the
box's host name, ``<host>.local`` and ``localhost``; browsers warn once, and the
SHA-256 fingerprint shown on the console lets the clinic check it is the box.
An admin can install a certificate from the clinic's own CA instead
(``pacs-appliance tls install``) or make a fresh self-signed one
(``pacs-appliance tls renew``). Both live in ``<data dir>/tls/`` and are read
when the service starts.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .archive.fsutil import atomic_output
from .errors import ConfigError

CERT_NAME = "cert.pem"
KEY_NAME = "key.pem"
VALID_DAYS = 3650


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path

    def exist(self) -> bool:
        return self.cert.is_file() and self.key.is_file()


def files(data_dir: Path) -> TlsFiles:
    tls_dir = Path(data_dir) / "tls"
    return TlsFiles(tls_dir / CERT_NAME, tls_dir / KEY_NAME)


def make_self_signed(hostname: str, now: dt.datetime | None = None) -> tuple[bytes, bytes]:
    """A new key and a self-signed server certificate for ``hostname``, as PEM (cert, key)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    names = [hostname, f"{hostname}.local", "localhost"]
    san = [x509.DNSName(n) for n in dict.fromkeys(names)] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, hostname),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PACS Appliance (self-signed on this box)"),
    ])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))  # tolerate a box clock that is slightly behind
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        # CLIENT_AUTH too: the box presents this certificate when it calls a DICOM TLS peer (appliance/dicom/tls.py)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def check_pair(cert_pem: bytes, key_pem: bytes) -> x509.Certificate:
    """Parse a certificate (chain) and key; raise ConfigError unless the key belongs to the first cert."""
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise ConfigError(f"the certificate file is not PEM: {exc}") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"the key file is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise ConfigError("the key must be an RSA or EC key")
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.DER, public)
            != chain[0].public_key().public_bytes(serialization.Encoding.DER, public)):
        raise ConfigError("the key does not belong to the certificate (the first certificate in the file)")
    return chain[0]


def fingerprint(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificates(cert_pem)[0]
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def install(data_dir: Path, cert_pem: bytes, key_pem: bytes) -> TlsFiles:
    """Check and write a certificate and key atomically; owned like the data directory.

    The key is readable by the service's user only; the certificate by anyone.
    """
    check_pair(cert_pem, key_pem)
    target = files(data_dir)
    target.cert.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    owner = os.stat(data_dir)
    _write(target.key, key_pem, 0o600, owner)
    _write(target.cert, cert_pem, 0o644, owner)
    _chown_like(target.cert.parent, owner)
    return target


def ensure(data_dir: Path, hostname: str) -> tuple[TlsFiles, bool]:
    """Make a self-signed certificate unless one is installed; return (files, created)."""
    target = files(data_dir)
    if target.exist():
        return target, False
    return install(data_dir, *make_self_signed(hostname)), True


def _write(path: Path, data: bytes, mode: int, owner: os.stat_result) -> None:
    with atomic_output(path, mode) as fh:
        fh.write(data)
        _chown_like(fh.fileno(), owner)  # the temp file, before it takes the name


def _chown_like(target: Path | int, owner: os.stat_result) -> None:
    """Give ``target`` (a path or an open descriptor) the owner of ``owner``."""
    if os.geteuid() == 0:  # root (provisioning, an admin's shell) writes files the service must own
        os.chown(target, owner.st_uid, owner.st_gid)
