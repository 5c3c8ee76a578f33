"""etcd as vigil runs it (vigil.lab.localetcd: the members' ETCD_* settings, on loopback,
no lab): TLS only, client certificates required, a revoked certificate refused once the
CRL names it. Needs etcd installed (not root)."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from vigil import pki
from vigil.lab.localetcd import local_etcd
from vigil.store.etcd import StoreError, run_with_store
from vigil.store.health import endpoint_healthy
from vigil.store.tls import EtcdTLS

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not installed")


async def write_read(s) -> int:  # type: ignore[no-untyped-def]
    await s.put("/vigil/tls-test", {"ok": 1})
    return (await s.get("/vigil/tls-test")).value["ok"]


def test_plain_text_and_clients_without_a_certificate_are_refused(tmp_path: Path) -> None:
    with local_etcd(tmp_path) as etcd:
        eps = [etcd.endpoint]
        assert run_with_store(eps, write_read, tls=etcd.tls) == 1
        assert endpoint_healthy(etcd.endpoint, tls=etcd.tls)
        with pytest.raises(StoreError):
            run_with_store(eps, write_read, timeout=1.5)  # plain-text gRPC
        assert not endpoint_healthy(etcd.endpoint)  # plain HTTP
        no_cert = dataclasses.replace(etcd.tls, cert="", key="")
        with pytest.raises(StoreError):
            run_with_store(eps, write_read, timeout=1.5, tls=no_cert)
        assert not endpoint_healthy(etcd.endpoint, tls=no_cert)
        # a certificate from another CA is refused too
        pki.create_ca(tmp_path / "other-ca", name="someone else")
        pki.issue(tmp_path / "other-ca", tmp_path, "client", "intruder")
        other = EtcdTLS(etcd.tls.ca, str(tmp_path / "client-cert.pem"), str(tmp_path / "client-key.pem"))
        with pytest.raises(StoreError):
            run_with_store(eps, write_read, timeout=1.5, tls=other)


def test_a_revoked_certificate_is_refused_once_the_crl_names_it(tmp_path: Path) -> None:
    with local_etcd(tmp_path) as etcd:
        d = tmp_path / "host4"
        d.mkdir()
        pki.issue(etcd.ca_dir, d, "client", "host4")
        host4 = EtcdTLS(etcd.tls.ca, str(d / "client-cert.pem"), str(d / "client-key.pem"))
        assert run_with_store([etcd.endpoint], write_read, tls=host4) == 1
        pki.revoke(etcd.ca_dir, [pki.serial_of(d / "client-cert.pem")])  # what remove-host does
        with pytest.raises(StoreError):
            run_with_store([etcd.endpoint], write_read, timeout=1.5, tls=host4)
        assert run_with_store([etcd.endpoint], write_read, tls=etcd.tls) == 1  # the others still work
