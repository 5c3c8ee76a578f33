"""Datastore heartbeats: vSphere's ``host-N-hb`` and ``host-N-poweron`` files in one.

Each agent rewrites ``<datastore>/.vigil/hb/<host>.json`` every tick: a counter, its
isolation flag and the VMs it runs. The controller reads them through its own mounts:
a counter that advances while the lease is gone means the host is alive but cut off.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

MARKER = ".vigil-datastore"
# Hosts' clocks agree within this (NTP); only used to shorten a new leader's first look.
CLOCK_SKEW_S = 0.5


@dataclass(frozen=True)
class HbRecord:
    host: str
    counter: int
    boot: str
    isolated: bool
    vms: tuple[str, ...]


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


class HbTracker:
    """The controller's memory of when each host's counter last moved, on its own clock.

    A host first seen at ``t`` counts as silent since ``t`` at most: a new leader must
    watch for the grace time before it may call a host's heartbeat stopped.
    """

    def __init__(self, started: float) -> None:
        self.started = started
        self._last: dict[str, tuple[int, float]] = {}
        self.latest: dict[str, HbRecord] = {}

    def observe(self, now: float, records: list[HbRecord]) -> None:
        """Take the freshest record of each host over all datastores (the counter is the
        writer's clock in ms, so it grows across agent restarts)."""
        best: dict[str, HbRecord] = {}
        for r in records:
            if r.host not in best or r.counter > best[r.host].counter:
                best[r.host] = r
        for host, r in best.items():
            prev = self._last.get(host)
            if prev is None or r.counter > prev[0]:
                self._last[host] = (r.counter, now)
            self.latest[host] = r

    def age(self, host: str, now: float, wall: float | None = None) -> float:
        """Seconds the host's heartbeat has not advanced, as far as we can tell.

        Our own observation is a lower bound. With ``wall`` (this host's clock), the
        writer's timestamp gives a second lower bound, less ``CLOCK_SKEW_S``: a freshly
        elected controller need not watch for the whole grace time first.
        """
        prev = self._last.get(host)
        seen = now - (prev[1] if prev else self.started)
        rec = self.latest.get(host)
        if wall is None or rec is None:
            return seen
        return max(seen, wall - rec.counter / 1000 - CLOCK_SKEW_S)
