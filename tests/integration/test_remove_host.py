"""`vigil cluster remove-host` on the real lab etcd: refused while the host's agent runs and
while it runs or owns a VM, and for an etcd member; once the host is down and its VMs
restarted elsewhere, its records leave etcd and its certificates are revoked (etcd then
refuses its client certificate, the members reading the new crl.pem at once).

Run alone, under the lab queue:  flock /run/vigil-lab-queue.lock .venv/bin/pytest -x tests/integration/test_remove_host.py
"""
from __future__ import annotations

import shutil
import subprocess

import pytest

from labcheck import LAB_MARKS, running_lab, vigil_cmd
from vigil.config import cluster_endpoints
from vigil.lab import faults, observe
from vigil.lab.lab_cluster import CLUSTER_DIR
from vigil.lab.scenario import create_lab_vms
from vigil.store import keys as K

pytestmark = LAB_MARKS


def remove_host(host: str) -> subprocess.CompletedProcess:
    return subprocess.run(vigil_cmd() + ["cluster", "remove-host", host, "--dir", str(CLUSTER_DIR)],
                          capture_output=True, text=True, timeout=60)


def records(host: str) -> dict[str, bool]:
    keys = (K.HOSTS + host, K.HOSTSTATE + host, K.MAINTENANCE + host, K.ALIVE + host)

    async def read(store):
        snap = await store.snapshot()
        return {k: k in snap for k in keys}

    return observe.call(read)


def test_remove_host_refused_while_in_use_then_forgets_it_and_revokes_its_certificates(tmp_path):
    # one etcd member (host1): host2 and host3 are hosts only, as remove-host wants
    with running_lab(hosts=3, datastores=1, etcd_members=1, reboot_delay_s=600.0) as lab:
        leader = observe.cluster()["leader"]
        victim = "host3" if leader != "host3" else "host2"
        create_lab_vms(["rh1"], hosts=[victim], stagger_s=0)
        observe.wait_for("rh1 running", lambda: observe.running_vms_ok(["rh1"]), timeout=180)

        r = remove_host(victim)
        assert r.returncode == 1, r.stdout + r.stderr
        err = " ".join(r.stderr.split())
        assert f"host {victim} is still in use" in err and "its agent is running" in err
        assert "it runs or is assigned VMs (rh1)" in err and "Traceback" not in r.stderr + r.stdout
        assert records(victim)[K.HOSTS + victim]  # nothing removed
        assert (CLUSTER_DIR / "hosts" / victim).exists()

        r = remove_host("host1")
        assert r.returncode == 1 and "is an etcd member" in " ".join(r.stderr.split()), r.stdout + r.stderr

        # keep a copy of its client certificate, to try it once it is revoked
        tls = CLUSTER_DIR / "hosts" / victim / "etc" / "vigil" / "tls" / "etcd"
        for f in ("client-cert.pem", "client-key.pem"):
            shutil.copy(tls / f, tmp_path / f)
        from vigil.pki import serial_of
        from vigil.store.etcd import StoreError, run_with_store
        from vigil.store.tls import EtcdTLS

        serial = serial_of(tmp_path / "client-cert.pem")
        ca = observe.cluster_tls().ca  # the cluster CA, as the CLI trusts it
        gone = EtcdTLS(ca, str(tmp_path / "client-cert.pem"), str(tmp_path / "client-key.pem"))

        async def read(store):
            return await store.get(K.LEADER)

        assert run_with_store(cluster_endpoints(), read, timeout=3.0, tls=gone) is not None  # it works, for now

        # down: its VM restarts elsewhere, its lease goes
        faults.power_off(lab, victim)
        observe.wait_for("rh1 restarted elsewhere",
                         lambda: observe.running_vms_ok(["rh1"], exclude_hosts={victim}), timeout=180)
        observe.wait_for(f"{victim}'s lease gone", lambda: not records(victim)[K.ALIVE + victim], timeout=30)

        r = remove_host(victim)
        assert r.returncode == 0, r.stdout + r.stderr
        out = " ".join((r.stdout + r.stderr).split())  # the CLI's progress lines go to stderr
        assert "records removed from etcd" in out and "certificates revoked" in out
        left = records(victim)
        assert not left[K.HOSTS + victim] and not left[K.HOSTSTATE + victim], left
        assert victim not in [h["name"] for h in observe.cluster()["hosts"]]
        assert not (CLUSTER_DIR / "hosts" / victim).exists()
        assert any(e.kind == "host-removed" and e.host == victim for e in observe.events())
        revoked = (CLUSTER_DIR / "ca" / "revoked.txt").read_text().split()
        assert str(serial) in revoked

        # etcd refuses the removed host's certificate; the operator's still works
        with pytest.raises(StoreError):
            run_with_store(cluster_endpoints(), read, timeout=2.0, tls=gone)
        assert observe.call(read) is not None

        # a second removal: no such host any more
        r = remove_host(victim)
        assert r.returncode == 1 and f"no host {victim!r}" in " ".join(r.stderr.split()), r.stdout + r.stderr
