"""Which Fault Tolerance roles this host takes, from etcd's FT keys (pure decisions).

- *Primary* of an FT VM it runs and owns, while the ``ft/`` key names a secondary on
  another host: it checkpoints to that secondary, in that key's epoch.
- An FT VM it runs and owns with no secondary to fail over to has nothing to hold back:
  its guest's output flows (a copy no longer ours keeps what it holds: a secondary may run
  from an older checkpoint, and this copy is being powered off).
- *Secondary* of an FT VM the ``ft/`` key names it for, while the VM is meant to run and
  is assigned to another host: it keeps standbys for that epoch.

A host is never both for one VM: the two need the key to name another host and this one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from vigil.model import VMSpec


@dataclass(frozen=True)
class FtKey:
    """``ft/<vm>``: the VM's secondary host (None: none yet) and its epoch."""

    secondary: str | None
    epoch: int

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> "FtKey":
        return cls(secondary=value.get("secondary"), epoch=int(value.get("epoch", 0)))


def primary_roles(me: str, stopping: Mapping[str, bool], ft: Mapping[str, FtKey],
                  owners: Mapping[str, Any]) -> dict[str, tuple[str, int]]:
    """VM -> (secondary, epoch) for each VM running here (``stopping``: whether its QEMU
    is being stopped) that this host primaries."""
    out: dict[str, tuple[str, int]] = {}
    for name, is_stopping in stopping.items():
        f = ft.get(name)
        if owners.get(name) == me and not is_stopping and f is not None and f.secondary not in (None, me):
            assert f.secondary is not None
            out[name] = (f.secondary, f.epoch)
    return out


def gates_to_open(me: str, stopping: Mapping[str, bool], ft: Mapping[str, FtKey], owners: Mapping[str, Any],
                  assigned: Mapping[str, Any], primaries: frozenset[str]) -> list[str]:
    """VMs running here whose guest output may flow freely now: ours (owned and assigned
    here), not primaried now nor to be primaried. ``primaries``: the primary loops running
    now (one still running keeps its gate to itself until it ends)."""
    want = primary_roles(me, stopping, ft, owners)
    return [name for name in stopping
            if name not in want and name not in primaries and owners.get(name) == me and assigned.get(name) == me]


def secondary_roles(me: str, ft: Mapping[str, FtKey], specs: Mapping[str, VMSpec],
                    assigned: Mapping[str, Any]) -> dict[str, int]:
    """VM -> epoch for each FT VM this host keeps standbys for."""
    out: dict[str, int] = {}
    for name, f in ft.items():
        spec = specs.get(name)
        if f.secondary == me and spec is not None and spec.power == "on" and assigned.get(name) not in (None, me):
            out[name] = f.epoch
    return out
