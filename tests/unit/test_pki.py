"""Certificates made by vigil.pki: the layout QEMU's tls-creds-x509 reads, signed by the CA."""
from __future__ import annotations

import stat

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from vigil import pki


def test_a_host_gets_server_and_client_certificates_signed_by_the_cluster_ca(tmp_path):
    ca = tmp_path / "ca"
    pki.create_ca(ca)
    first = (ca / "ca-cert.pem").read_bytes()
    pki.create_ca(ca)  # a second call keeps the CA
    assert (ca / "ca-cert.pem").read_bytes() == first
    tls = pki.create_host_certs(ca, tmp_path / "h1", "host1", ips=("10.77.0.1",))
    assert sorted(p.name for p in tls.iterdir()) == [
        "ca-cert.pem", "client-cert.pem", "client-key.pem", "dh-params.pem", "server-cert.pem", "server-key.pem"]
    ca_cert = x509.load_pem_x509_certificate(first)
    for role, usage in (("server", ExtendedKeyUsageOID.SERVER_AUTH), ("client", ExtendedKeyUsageOID.CLIENT_AUTH)):
        cert = x509.load_pem_x509_certificate((tls / f"{role}-cert.pem").read_bytes())
        ca_cert.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                                    ec.ECDSA(cert.signature_hash_algorithm))  # raises if not signed by the CA
        assert cert.issuer == ca_cert.subject
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["host1"]
        assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.77.0.1"]
        assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [usage]
        assert stat.S_IMODE((tls / f"{role}-key.pem").stat().st_mode) == 0o600
        assert (tls / f"{role}-key.pem").read_text().startswith("-----BEGIN EC PRIVATE KEY-----")  # gnutls reads SEC1
