"""The Diffie-Hellman parameters of a TLS dir (``dh-params.pem``), so that QEMU never makes
its own.

A ``tls-creds-x509`` object with ``endpoint=server`` whose dir has no ``dh-params.pem``
makes 2048-bit parameters with gnutls (``gnutls_dh_params_generate2``) as QEMU starts:
0.4-1.1 s of CPU, more than all the rest of a QEMU start, paid by every VM start of a host
with migration TLS (its QEMUs carry both TLS objects), a failover's restarts included. The
RFC 7919 group ffdhe2048 is a fixed, public, recommended group: written once into the dir,
QEMU only reads it. An operator's own ``dh-params.pem`` is left as it is.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger("vigil.hypervisor")

DH_PARAMS = "dh-params.pem"

# RFC 7919 appendix A.1, ffdhe2048 (p, g = 2) in PKCS#3 PEM, as gnutls reads it
FFDHE2048_PEM = """\
-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
"""

_warned: set[str] = set()


def ensure_dh_params(tls_dir: str | Path) -> bool:
    """``tls_dir`` has a ``dh-params.pem`` (written now if it had none); False where it
    could not be written (a read-only dir: QEMU then makes its own at each start, slowly,
    said once in the log)."""
    path = Path(tls_dir) / DH_PARAMS
    if path.exists():
        return True
    tmp = path.with_name(f".{DH_PARAMS}.{os.getpid()}.tmp")
    try:
        tmp.write_text(FFDHE2048_PEM)
        os.chmod(tmp, 0o644)  # public parameters
        os.replace(tmp, path)
        return True
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if str(tls_dir) not in _warned:
            _warned.add(str(tls_dir))
            log.warning("cannot write %s (%s): each QEMU start makes its own DH parameters (~0.5 s of CPU)",
                        path, e)
        return False
