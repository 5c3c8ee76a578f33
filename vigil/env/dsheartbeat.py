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


# The functions below run several times a second on every host (the heartbeat tick, the
# controller's cycle): plain os calls, one syscall each where pathlib would make several.
def reachable(ds_name: str, ds_path: str) -> bool:
    """A datastore is reachable when its marker is there and names it (not an empty mountpoint)."""
    try:
        with open(os.path.join(ds_path, MARKER)) as f:
            return f.read().strip() == ds_name
    except (OSError, ValueError):
        return False


def write(ds_path: str, rec: HbRecord) -> bool:
    d = os.path.join(ds_path, ".vigil", "hb")
    tmp = os.path.join(d, f".{rec.host}.tmp")
    data = json.dumps(rec.__dict__ | {"vms": list(rec.vms)})
    try:
        try:
            f = open(tmp, "w")
        except FileNotFoundError:  # the first heartbeat on this datastore
            os.makedirs(d, exist_ok=True)
            f = open(tmp, "w")
        with f:
            f.write(data)
        os.replace(tmp, os.path.join(d, f"{rec.host}.json"))
        return True
    except OSError:
        return False


def read_all(ds_path: str) -> dict[str, HbRecord]:
    out: dict[str, HbRecord] = {}
    try:
        with os.scandir(os.path.join(ds_path, ".vigil", "hb")) as it:
            files = [e.path for e in it if e.name.endswith(".json")]
    except OSError:
        return out
    for path in files:
        try:
            with open(path) as f:
                data = json.loads(f.read())
            out[data["host"]] = HbRecord(
                host=data["host"], counter=int(data["counter"]), boot=str(data.get("boot", "")),
                isolated=bool(data.get("isolated")), vms=tuple(data.get("vms", ())),
            )
        except (OSError, ValueError, KeyError):
            continue
    return out
