"""Isolation: is this host cut off, and what to do with each VM then (pure decisions)."""
from __future__ import annotations

import asyncio

from vigil.model import VMSpec


def is_isolated(lease_lost: bool, peers_answer: bool, isolation_address_answers: bool) -> bool:
    """vSphere's rule: isolated when cut from the cluster (lease) and nothing answers at all.

    A host that still reaches a peer or an isolation address is merely partitioned: its
    VMs keep running, and the controller on the other side does not restart them.
    """
    return lease_lost and not peers_answer and not isolation_address_answers


def isolation_action(spec: VMSpec | None) -> str:
    """What to do with a running VM when the host finds itself isolated."""
    if spec is None:
        return "leave-powered-on"
    return spec.isolation_response


async def ping(address: str, timeout_s: float = 1.0) -> bool:
    """One ICMP echo; True when it was answered."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "ping", "-n", "-q", "-c", "1", "-W", f"{timeout_s:g}", address,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return False
    try:
        return await asyncio.wait_for(proc.wait(), timeout_s + 1) == 0
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return False


async def any_answers(addresses: list[str], timeout_s: float = 1.0) -> bool:
    if not addresses:
        return False
    results = await asyncio.gather(*(ping(a, timeout_s) for a in addresses))
    return any(results)
