"""The lab's credentials: a CA, the API server's serving certificate, the admin token and
the service-account signing key, under /var/lib/netlab/<lab>/pki (0700, files 0600).

Made with `cryptography` at the first `up` and kept across `down` (a kubeconfig stays
valid); remade only when missing or when the serving certificate lacks a wanted SAN.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from netlab.api.http.auth import new_secret

DNS_NAMES = ("kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local", "localhost")


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca_crt(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def crt(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def admin_token(self) -> Path:
        return self.dir / "admin.token"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    def read_admin_token(self) -> str:
        return self.admin_token.read_text().strip()

    def read_sa_key(self) -> str:
        return self.sa_key.read_text().strip()


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _sans_of(crt_path: Path) -> set[str]:
    try:
        crt = x509.load_pem_x509_certificate(crt_path.read_bytes())
        ext = crt.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return set()
    return {str(v) for v in ext.get_values_for_type(x509.IPAddress)} | set(ext.get_values_for_type(x509.DNSName))


def ensure(directory: Path, lab: str, ips: list[str]) -> tuple[Pki, list[str]]:
    """Make what is missing; returns the Pki and what was made (for `up`'s report)."""
    p = Pki(directory)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    made: list[str] = []
    now = datetime.datetime.now(datetime.timezone.utc)
    if not (p.ca_crt.exists() and p.ca_key.exists()):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (x509.CertificateBuilder().subject_name(_name(f"netlab-{lab}-ca")).issuer_name(_name(f"netlab-{lab}-ca"))
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=3650))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                           content_commitment=False, key_encipherment=False, data_encipherment=False,
                                           key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
              .sign(ca_key, hashes.SHA256()))
        _write(p.ca_key, _key_pem(ca_key))
        _write(p.ca_crt, ca.public_bytes(serialization.Encoding.PEM))
        made.append("CA")
        for f in (p.crt, p.key):
            f.unlink(missing_ok=True)
    want = set(ips) | set(DNS_NAMES)
    if not (p.crt.exists() and p.key.exists()) or not want <= _sans_of(p.crt):
        ca_key = serialization.load_pem_private_key(p.ca_key.read_bytes(), None)
        ca = x509.load_pem_x509_certificate(p.ca_crt.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        sans = [x509.IPAddress(ipaddress.ip_address(i)) for i in sorted(set(ips))] + \
               [x509.DNSName(d) for d in DNS_NAMES]
        crt = (x509.CertificateBuilder().subject_name(_name("kube-apiserver")).issuer_name(ca.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=3650))
               .add_extension(x509.SubjectAlternativeName(sans), critical=False)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
               .sign(ca_key, hashes.SHA256()))
        _write(p.key, _key_pem(key))
        _write(p.crt, crt.public_bytes(serialization.Encoding.PEM))
        made.append("serving certificate")
    if not p.admin_token.exists():
        _write(p.admin_token, new_secret().encode() + b"\n")
        made.append("admin token")
    if not p.sa_key.exists():
        _write(p.sa_key, new_secret().encode() + b"\n")
        made.append("service-account key")
    return p, made
