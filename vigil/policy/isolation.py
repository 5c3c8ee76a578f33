"""Isolation: is this host cut off, and what to do with each VM then (pure decisions)."""
from __future__ import annotations

from vigil.model import VMSpec


def is_isolated(lease_lost: bool, peers_answer: bool, isolation_address_answers: bool) -> bool:
    """vSphere's rule: isolated when cut from the cluster (lease) and nothing answers at all.

    A host that still reaches a peer or an isolation address is merely partitioned: its
    VMs keep running, and the controller on the other side does not restart them.
    """
    return lease_lost and not peers_answer and not isolation_address_answers


def isolation_action(spec: VMSpec | None) -> str:
    """What to do with a running VM when the host finds itself isolated.

    A VM whose restart priority is "disabled" is one HA never acts on (vSphere: "no host
    isolation response is made"): powering it off would only stop it, since nothing
    restarts it elsewhere. An FT primary is the exception, decided by the agent: its
    secondary takes over, so the primary must not run on."""
    if spec is None or spec.restart_priority == "disabled":
        return "leave-powered-on"
    return spec.isolation_response
