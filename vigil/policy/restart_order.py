"""The order VMs are handled in each cycle: restart priority first, then name."""
from __future__ import annotations

from vigil.model import RESTART_PRIORITIES
from vigil.policy.view import VMView


_RANK = {p: i for i, p in enumerate(RESTART_PRIORITIES)}  # asked for every VM of every cycle


def priority_rank(priority: str) -> int:
    rank = _RANK.get(priority)
    return RESTART_PRIORITIES.index(priority) if rank is None else rank  # (an unknown one raises, as before)


def restart_order(vms: list[VMView]) -> list[VMView]:
    """Highest priority first; among equals, by name so the order is stable."""
    try:
        return sorted(vms, key=lambda v: (_RANK[v.spec.restart_priority], v.spec.name))
    except KeyError:  # an unknown priority: priority_rank raises, as it always did
        return sorted(vms, key=lambda v: (priority_rank(v.spec.restart_priority), v.spec.name))
