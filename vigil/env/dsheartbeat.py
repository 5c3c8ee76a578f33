"""Datastore heartbeats: vSphere's ``host-N-hb`` and ``host-N-poweron`` files in one.

The file side of them (the real environment's); what a heartbeat's silence means is
vigil.policy.heartbeats. Each agent rewrites ``<datastore>/.vigil/hb/<host>.json`` every tick: a counter, its
isolation flag and the VMs it runs. The controller reads them through its own mounts:
a counter that advances while the lease is gone means the host is alive but cut off.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from vigil.model import HbRecord

MARKER = ".vigil-datastore"


def hb_dir(ds_path: str) -> Path:
    return Path(ds_path) / ".vigil" / "hb"


def reachable(ds_name: str, ds_path: str) -> bool:
    """A datastore is reachable when its marker is there and names it (not an empty mountpoint)."""
    try:
        return (Path(ds_path) / MARKER).read_text().strip() == ds_name
    except OSError:
        return False


def write(ds_path: str, rec: HbRecord) -> bool:
    d = hb_dir(ds_path)
    try:
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{rec.host}.tmp"
        tmp.write_text(json.dumps(rec.__dict__ | {"vms": list(rec.vms)}))
        os.replace(tmp, d / f"{rec.host}.json")
        return True
    except OSError:
        return False


def read_all(ds_path: str) -> dict[str, HbRecord]:
    out: dict[str, HbRecord] = {}
    d = hb_dir(ds_path)
    try:
        files = list(d.glob("*.json"))
    except OSError:
        return out
    for f in files:
        try:
            data = json.loads(f.read_text())
            out[data["host"]] = HbRecord(
                host=data["host"], counter=int(data["counter"]), boot=str(data.get("boot", "")),
                isolated=bool(data.get("isolated")), vms=tuple(data.get("vms", ())),
            )
        except (OSError, ValueError, KeyError):
            continue
    return out
