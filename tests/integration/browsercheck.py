"""Shared helpers of the browser tests (real Chromium through Playwright)."""
from __future__ import annotations

import base64
import hashlib
import socket
import ssl
from urllib.parse import urlparse


def verified_spki(url: str, ca: str) -> str:
    """The base64 SHA-256 of the server's public key, once its certificate checks out
    against ``ca`` for the address in ``url``: Chromium is then told to trust that key
    alone (``--ignore-certificate-errors-spki-list``), not every certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    u = urlparse(url)
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection((u.hostname, u.port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=u.hostname) as tls:
        der = tls.getpeercert(binary_form=True)
    key = x509.load_der_x509_certificate(der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(key).digest()).decode()
