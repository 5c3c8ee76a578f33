"""A one-member etcd on 127.0.0.1, outside the lab: for QEMU-level benchmarks and tests
that drive the agent's code against a real store (vigil.lab.ftpair, bench/ft.py, the API
test rig).

It runs as a cluster's member does: TLS for clients and peers, client certificates
required, its ETCD_* settings from vigil.bootstrap.etcd_member (certificates from a CA of
its own under the caller's dir). It listens on free loopback ports (never the lab's fixed
2379/2380, so it runs beside a lab), keeps its data under the caller's dir and is killed
by its pid at the end.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vigil import pki
from vigil.bootstrap import etcd_member
from vigil.lab.etcd import endpoint_healthy, etcd_binary
from vigil.lab.layout import LabError
from vigil.lab.standalone import free_port
from vigil.store.tls import DEFAULT_SERVER_NAME, EtcdTLS

START_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class LocalEtcd:
    """What a client needs: the endpoint, the client certificate, the CA dir (to issue more)."""

    endpoint: str
    tls: EtcdTLS
    ca_dir: Path

    def env(self) -> dict[str, str]:
        """The variables that point a `vigil` command (the CLI, `vigil api`) at this etcd."""
        return {"VIGIL_ETCD": self.endpoint, "VIGIL_ETCD_CA": self.tls.ca, "VIGIL_ETCD_CERT": self.tls.cert,
                "VIGIL_ETCD_KEY": self.tls.key}


def member_files(root: Path, name: str = "local") -> tuple[etcd_member.MemberFiles, EtcdTLS, Path]:
    """A CA, the member's certificates, a client certificate and an empty CRL under ``root``/tls."""
    ca, d = root / "tls" / "ca", root / "tls"
    pki.create_ca(ca, name="vigil local etcd CA")
    pki.revoke(ca, [])
    pki.issue(ca, d, "server", name, ips=("127.0.0.1",), usages=("server", "client"),
              dns=(DEFAULT_SERVER_NAME, "localhost"))
    pki.issue(ca, d, "peer", name, ips=("127.0.0.1",), usages=("server", "client"))
    pki.issue(ca, d, "client", f"{name}-client")
    cacert = str(ca / pki.CA_CERT)
    files = etcd_member.MemberFiles(ca=cacert, cert=str(d / "server-cert.pem"), key=str(d / "server-key.pem"),
                                    peer_cert=str(d / "peer-cert.pem"), peer_key=str(d / "peer-key.pem"),
                                    crl=str(ca / pki.CRL))
    return files, EtcdTLS(cacert, str(d / "client-cert.pem"), str(d / "client-key.pem")), ca


@contextlib.contextmanager
def local_etcd(root: Path) -> Iterator[LocalEtcd]:
    """Run etcd with its data in ``root``/etcd and its log in ``root``/etcd.log; yields it,
    healthy (its /health asked with the client certificate)."""
    root.mkdir(parents=True, exist_ok=True)
    client = free_port()
    peer = free_port()
    while peer == client:
        peer = free_port()
    files, tls, ca = member_files(root)
    env = etcd_member.member_env("local", "127.0.0.1", {"local": "127.0.0.1"}, files, str(root / "etcd"),
                                 "vigil-local", client_port=client, peer_port=peer)
    local = LocalEtcd(f"127.0.0.1:{client}", tls, ca)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    with open(root / "etcd.log", "wb") as logf:
        proc = subprocess.Popen([etcd_binary()], stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                env=clean | env)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not endpoint_healthy(local.endpoint, timeout=0.5, tls=tls):
            if proc.poll() is not None:
                raise LabError(f"etcd exited ({proc.returncode}); see {root / 'etcd.log'}")
            if time.monotonic() > deadline:
                raise LabError(f"etcd not healthy within {START_TIMEOUT_S:.0f}s; see {root / 'etcd.log'}")
            time.sleep(0.1)
        yield local
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
