"""Certificates: a cluster CA, per-host certificates and the CA's revocation list, made
with ``cryptography`` (migration TLS, etcd members and clients, the API servers: see
vigil.bootstrap.cluster_dir).

One library call per step instead of openssl command lines: no temporary CSR or extension
files, errors as exceptions, and the same code on every host. The files are laid out as
QEMU's ``tls-creds-x509`` wants them (``ca-cert.pem``, ``server-cert.pem``/``-key.pem``,
``client-cert.pem``/``-key.pem``, and ``dh-params.pem``: vigil.hypervisor.dhparams), EC
P-256 keys in SEC1 PEM, which gnutls reads.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vigil.hypervisor.dhparams import ensure_dh_params

CA_CERT, CA_KEY = "ca-cert.pem", "ca-key.pem"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.timezone.utc)
    return now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)  # 5 min of clock skew


def create_ca(ca_dir: Path, name: str = "vigil migration CA", days: int = 3650) -> Path:
    """A CA (``ca-cert.pem``, ``ca-key.pem``) in ``ca_dir``, unless one is there already.

    Keep ``ca-key.pem`` off the hosts; only ``ca-cert.pem`` goes into each host's TLS dir.
    """
    ca_dir = Path(ca_dir)
    ca_dir.mkdir(parents=True, exist_ok=True)
    cert_path = ca_dir / CA_CERT
    if cert_path.exists():
        return cert_path
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _validity(days)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         key_cert_sign=True, crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write_key(ca_dir / CA_KEY, key)
    tmp = cert_path.with_suffix(".tmp")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, cert_path)  # last: a CA dir with a cert has its key
    return cert_path


_USAGES = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}


def issue(ca_dir: Path, out_dir: Path, role: str, hostname: str, ips: tuple[str, ...] = (),
          days: int = 825, *, usages: tuple[str, ...] = (), dns: tuple[str, ...] = ()) -> Path:
    """``<role>-cert.pem`` and ``<role>-key.pem`` in ``out_dir`` for ``hostname`` (and
    ``ips``, and the extra DNS names ``dns``), signed by the CA in ``ca_dir``. ``usages``:
    "server" and/or "client" (default: ``role`` itself, which is then one of them); an etcd
    member's certificates need both (a member is its peers' client, and its gRPC gateway
    is its own)."""
    ca_dir, out_dir = Path(ca_dir), Path(out_dir)
    ca_key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((ca_dir / CA_CERT).read_bytes())
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{ca_dir / CA_KEY}: not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    eku = [_USAGES[u] for u in (usages or (role if role == "server" else "client",))]
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys((hostname, *dns))]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    start, end = _validity(days)
    cert = (x509.CertificateBuilder().subject_name(_name(hostname)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=True, data_encipherment=False, key_agreement=False,
                                         key_cert_sign=False, crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_key(out_dir / f"{role}-key.pem", key)
    (out_dir / f"{role}-cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return out_dir / f"{role}-cert.pem"


def create_host_certs(ca_dir: Path, tls_dir: Path, hostname: str, ips: tuple[str, ...] = (),
                      days: int = 825) -> Path:
    """A host's TLS dir for ``tls-creds-x509``: ca-cert.pem, server-cert.pem/-key.pem (its
    migration listener) and client-cert.pem/-key.pem (its outgoing migrations), signed by
    the CA in ``ca_dir``. The server cert names ``hostname`` and ``ips`` (what the source
    puts in the migration URI is what it verifies)."""
    ca_dir, tls_dir = Path(ca_dir), Path(tls_dir)
    tls_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(tls_dir, 0o700)
    (tls_dir / CA_CERT).write_bytes((ca_dir / CA_CERT).read_bytes())
    for role in ("server", "client"):
        issue(ca_dir, tls_dir, role, hostname, ips, days)
    ensure_dh_params(tls_dir)  # QEMU's TLS server object makes its own at each start otherwise
    return tls_dir


REVOKED, CRL = "revoked.txt", "crl.pem"


def serial_of(cert_path: Path) -> int:
    return x509.load_pem_x509_certificate(Path(cert_path).read_bytes()).serial_number


def revoke(ca_dir: Path, serials: list[int], days: int = 3650) -> Path:
    """Add ``serials`` to the CA's revoked list and write ``crl.pem`` (every revoked
    serial, signed by the CA; with none, an empty list that etcd can read already)."""
    ca_dir = Path(ca_dir)
    listed = ca_dir / REVOKED
    known = [int(x) for x in listed.read_text().split()] if listed.exists() else []
    known += [s for s in serials if s not in known]
    listed.write_text("".join(f"{s}\n" for s in known))
    ca_key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((ca_dir / CA_CERT).read_bytes())
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{ca_dir / CA_KEY}: not an EC key")
    start, end = _validity(days)
    b = x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject).last_update(start).next_update(end)
    for s in known:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(s)
                                      .revocation_date(start).build())
    crl = b.sign(ca_key, hashes.SHA256())
    tmp = ca_dir / (CRL + ".tmp")
    tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, ca_dir / CRL)
    return ca_dir / CRL
