"""Repairing a powered-off VM's stale disk copies (``vigil vm repair-disk``), as pure logic.

A running VM's stale copies are resynced live by its own agent (vigil.agent.disks). A
powered-off VM has no agent of its own: its repair is a task ("repair-disk") that one host
carries out, copying each disk's good copy over its stale one. That host must reach both
datastores of every disk to repair; the VM must stay powered off and unowned throughout,
so that nothing writes the good copy while it is copied.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from vigil.model import VMSpec


def offline_copies(spec: VMSpec, stale: Mapping[str, str],
                   only: Iterable[str] | None = None) -> list[tuple[str, str, str]]:
    """(disk, good datastore, stale datastore) of each replicated disk with a stale copy,
    in the spec's order; ``only``: just these disks (those a task names)."""
    wanted = set(only) if only is not None else None
    out = []
    for d in spec.disks:
        bad = stale.get(d.name)
        if not d.replica or bad not in d.copies or (wanted is not None and d.name not in wanted):
            continue
        out.append((d.name, next(ds for ds in d.copies if ds != bad), bad))
    return out


def needed_datastores(copies: Iterable[tuple[str, str, str]]) -> set[str]:
    return {ds for _, good, bad in copies for ds in (good, bad)}


def repair_host(copies: list[tuple[str, str, str]], reach: Mapping[str, Iterable[str]]) -> tuple[str | None, str]:
    """The host to carry the repair out: the first by name of the live hosts (``reach``:
    host -> the datastores it reaches) that reach every datastore involved; or None and why."""
    need = needed_datastores(copies)
    able = sorted(h for h, dss in reach.items() if need <= set(dss))
    if able:
        return able[0], f"{able[0]} reaches {', '.join(sorted(need))}"
    if not reach:
        return None, "no host is alive to copy the disks"
    return None, f"no live host reaches all of {', '.join(sorted(need))}"


def repair_refusal(power: str, owner: str | None, copies: list[tuple[str, str, str]],
                   reachable: Mapping[str, bool], me: str) -> str | None:
    """Why host ``me`` must not (or need not) copy now, or None to go ahead. Checked before
    each disk: the VM may have been powered on, or a datastore lost, meanwhile."""
    if power == "on":
        return "the VM was powered on"
    if owner:
        return f"the VM is owned by {owner}"
    lost = sorted(ds for ds in needed_datastores(copies) if not reachable.get(ds, False))
    if lost:
        return f"{me} does not reach datastore {', '.join(lost)}"
    return None


__all__ = ["offline_copies", "needed_datastores", "repair_host", "repair_refusal"]
