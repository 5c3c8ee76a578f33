"""The order VMs are handled in each cycle: restart priority first, then name."""
from __future__ import annotations

from vigil.model import RESTART_PRIORITIES
from vigil.policy.view import VMView


def priority_rank(priority: str) -> int:
    return RESTART_PRIORITIES.index(priority)


def restart_order(vms: list[VMView]) -> list[VMView]:
    """Highest priority first; among equals, by name so the order is stable."""
    return sorted(vms, key=lambda v: (priority_rank(v.spec.restart_priority), v.spec.name))
