"""Admission control on the real lab, through the CLI: a power-on refused with its figures,
the capacity view, and a what-if that changes nothing. About a minute."""
from __future__ import annotations

import json
import subprocess

import pytest

from vigil.lab import observe
from vigil.lab.scenario import create_lab_vms

from labcheck import LAB_MARKS, vigil_cmd
from labpool import shared_lab

pytestmark = LAB_MARKS + [pytest.mark.timeout(400)]

# the lab shared with the other modules of this config while each test leaves it as fresh (labpool)
lab_pool, lab = shared_lab(fresh_after=True, hosts=3, datastores=1, reboot_delay_s=60.0)


def vigil(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(vigil_cmd() + list(argv), capture_output=True, text=True, timeout=60)


def test_a_refused_power_on_says_why_in_numbers(lab) -> None:
    hosts = observe.cluster()["hosts"]
    slot = min(h["memory_mb"] for h in hosts)  # one slot per host: 3 in all, 1 held back
    r = vigil("cluster", "set", "admission", "--policy", "slots", "--failures", "1", "--slot-memory", str(slot))
    assert r.returncode == 0, r.stderr
    create_lab_vms(["a1", "a2"], hosts=[hosts[0]["name"], hosts[1]["name"]], stagger_s=0.5)
    observe.wait_for("a1, a2 running", lambda: observe.running_vms_ok(["a1", "a2"]), timeout=180)

    cap = json.loads(vigil("cluster", "capacity", "--json").stdout)
    assert (cap["policy"], cap["slots"], cap["slots_reserved"], cap["slots_used"], cap["tolerates"]) == \
        ("slots", 3, 1, 2, 1), cap
    table = vigil("cluster", "capacity")
    assert table.returncode == 0 and "tolerates now" in table.stdout, table.stdout

    r = vigil("vm", "create", "extra", "--stopped")
    assert r.returncode == 0, r.stderr
    before = observe.cluster()["vms"]
    r = vigil("vm", "start", "extra")
    assert r.returncode == 1, (r.stdout, r.stderr)
    msg = " ".join(r.stderr.split())
    assert ("admission control (slots, 1 host failure to tolerate) refuses powering on extra (128 MiB, 1 vCPU): "
            f"it needs 1 slot of {slot} MiB / 1 vCPU; 0 of 3 are free (1 reserved for 1 host failure, 2 used, "
            "on 3 running hosts)") in msg, msg
    assert "Traceback" not in r.stderr
    after = observe.cluster()["vms"]
    assert [(v["name"], v["power"], v["revision"]) for v in after] == \
        [(v["name"], v["power"], v["revision"]) for v in before]

    w = json.loads(vigil("cluster", "what-if", "--fail", hosts[0]["name"], "--json").stdout)
    assert w["affected"] == ["a1"] and [x["vm"] for x in w["restarts"]] == ["a1"], w
    assert observe.running_vms_ok(["a1", "a2"])  # nothing moved

    r = vigil("cluster", "set", "admission", "--policy", "off")
    assert r.returncode == 0, r.stderr
    r = vigil("vm", "start", "extra")
    assert r.returncode == 0, r.stderr
