"""/cluster/settings over a real etcd and a real `vigil api` (no lab: apirig): the five
cluster policies read and replaced through one shape, each read back by its own route
too; bad values refused (422 naming the field, etcd unchanged); roles as the other
writes; a stale If-Match refused (409)."""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from apirig import Rig, api_rig

NAMES = ["admission", "retries", "monitoring", "orchestration", "drs"]
# a value to set for each, and the route of its own that must then show it
CHANGES: list[tuple[str, dict[str, Any], str, dict[str, Any]]] = [
    ("admission", {"policy": "slots", "failures": 1, "slot_memory_mb": 256}, "/cluster/admission",
     {"policy": "slots", "slot_memory_mb": 256}),
    ("retries", {"delays": [3, 9], "max_attempts": 5}, "/cluster/retries", {"delays": [3.0, 9.0], "max_attempts": 5}),
    ("monitoring", {"preset": "high", "interval_s": 45}, "/cluster/monitoring", {"preset": "high", "interval_s": 45}),
    ("orchestration", {"ready": "guest", "delay_s": 5}, "/cluster/orchestration",
     {"effective": {"ready": "guest", "delay_s": 5, "timeout_s": 60.0}}),
    ("drs", {"mode": "manual", "threshold": 4}, "/drs/settings", {"mode": "manual", "threshold": 4}),
]
# (name, body, the words the refusal must hold: the field it names)
BAD: list[tuple[str, Any, str]] = [
    ("admission", {"policy": "sometimes"}, "policy"),
    ("admission", {"policy": "slots", "failures": -1}, "failures"),
    ("admission", {"policy": "failover-hosts", "hosts": ["h9"]}, "unknown failover host h9"),
    ("admission", {"policy": "off", "colour": "red"}, "colour: Extra inputs are not permitted"),
    ("retries", {"delays": []}, "delays"),
    ("retries", {"delays": [1], "max_attempts": "often"}, "max_attempts"),
    ("monitoring", {"preset": "fast"}, "monitoring preset must be one of"),
    ("monitoring", {"preset": "high", "interval_s": 0}, "interval_s"),
    ("orchestration", {"ready": "soon"}, "ready must be one of"),
    ("orchestration", {"timeout_s": -1}, "timeout_s must be"),
    ("orchestration", {"colour": 1}, "unknown field(s) colour"),
    ("orchestration", {"tiers": {"urgent": {}}}, "no restart priority 'urgent'"),
    ("drs", {"threshold": 9}, "threshold"),
    ("drs", {"mode": "sometimes"}, "mode"),
    ("drs", {"space_threshold": 2}, "space_threshold"),
    ("drs", [1, 2], "valid dictionary"),
    ("nope", {}, "name"),
]


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    with api_rig() as r:
        yield r


def test_all_five_read_with_their_defaults(rig: Rig) -> None:
    got = rig.client("auditor").get("/api/v1/cluster/settings")
    assert got.status_code == 200, got.text
    by = {s["name"]: s for s in got.json()}
    assert list(by) == NAMES
    assert by["admission"]["value"]["policy"] == "off" and by["drs"]["value"]["mode"] == "off"
    assert by["monitoring"]["value"]["preset"] == "off" and by["retries"]["value"]["delays"]
    assert by["orchestration"]["value"]["ready"] == "allocated"
    for s in by.values():
        assert s["summary"] and isinstance(s["stored"], dict) and isinstance(s["revision"], int)


@pytest.mark.parametrize("name, body, route, shown", CHANGES, ids=[c[0] for c in CHANGES])
def test_set_and_read_back_here_and_by_its_own_route(rig: Rig, name: str, body: dict, route: str,
                                                     shown: dict) -> None:
    admin = rig.client("admin")
    before = admin.get(f"/api/v1/cluster/settings/{name}").json()
    # what GET gives is what PUT takes: writing it back changes no value
    same = admin.put(f"/api/v1/cluster/settings/{name}", json=before["value"])
    assert same.status_code == 200, same.text
    assert same.json()["value"] == before["value"]
    r = admin.put(f"/api/v1/cluster/settings/{name}", json=body, headers={"If-Match": str(same.json()["revision"])})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["revision"] > same.json()["revision"]
    for k, v in body.items():
        assert out["value"][k] == v, (k, out)
    own = admin.get("/api/v1" + route).json()
    for k, v in shown.items():
        assert own[k] == v, (k, own)
    assert rig.client("auditor").get(f"/api/v1/cluster/settings/{name}").json() == out


@pytest.mark.parametrize("name, body, words", BAD, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BAD)])
def test_bad_values_are_422_naming_the_field_and_write_nothing(rig: Rig, name: str, body: Any, words: str) -> None:
    before = rig.dump()
    r = rig.client("admin").put(f"/api/v1/cluster/settings/{name}", json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert words in r.json()["detail"], r.json()
    assert rig.dump() == before


def test_roles_credentials_and_stale_revisions(rig: Rig) -> None:
    before = rig.dump()
    for role in ("auditor", "operator"):
        c = rig.client(role)
        assert c.get("/api/v1/cluster/settings/drs").status_code == 200
        r = c.put("/api/v1/cluster/settings/drs", json={"mode": "automatic"})
        assert r.status_code == 403 and "admin" in r.json()["detail"], r.text
    anon = rig.client(None)
    assert anon.get("/api/v1/cluster/settings").status_code == 401
    assert anon.put("/api/v1/cluster/settings/drs", json={"mode": "automatic"}).status_code == 401
    assert rig.dump() == before
    admin = rig.client("admin")
    rev = admin.get("/api/v1/cluster/settings/retries").json()["revision"]
    ok = admin.put("/api/v1/cluster/settings/retries", json={"delays": [1]}, headers={"If-Match": str(rev)})
    assert ok.status_code == 200, ok.text
    before = rig.dump()
    stale = admin.put("/api/v1/cluster/settings/retries", json={"delays": [2]}, headers={"If-Match": str(rev)})
    assert stale.status_code == 409 and "changed since revision" in stale.json()["detail"], stale.text
    assert rig.dump() == before


def test_the_cli_lists_them(rig: Rig, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`vigil cluster settings` reads the same route."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path), "VIGIL_API": rig.url, "VIGIL_CA": rig.ca,
           "VIGIL_TOKEN": rig.tokens["auditor"]}
    vigil = os.path.join(os.path.dirname(sys.executable), "vigil")
    r = subprocess.run([vigil, "cluster", "settings", "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert [s["name"] for s in json.loads(r.stdout)] == NAMES
    r = subprocess.run([vigil, "cluster", "settings"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and "orchestration" in r.stdout and "ready when" in r.stdout, r.stdout + r.stderr
